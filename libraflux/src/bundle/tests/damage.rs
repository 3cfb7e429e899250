//! Damaged and arbitrary input: `decode` never panics, and whatever it accepts it reads whole
//! (re-encoding what came out gives files that decode the same).

use proptest::{collection::vec, prelude::*, sample::Index};

use super::{file, gzip};
use crate::bundle::{Limits, decode, encode};

fn sample() -> Vec<u8> {
    encode(&[file("10-web.yaml", "services: []\n"), file("20-dns.yaml", &"ignore: []\n".repeat(40))])
}

/// The uncompressed archive of [`sample`].
fn sample_tar() -> Vec<u8> {
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(sample().as_slice()), &mut tar).unwrap();
    tar
}

fn accepted_whole(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(files) = decode(bytes, &Limits::default()) {
        prop_assert_eq!(decode(&encode(&files), &Limits::default()).expect("re-encoded"), files);
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..4096)) {
        accepted_whole(&bytes)?;
        accepted_whole(&gzip(&bytes))?;
    }

    #[test]
    fn a_damaged_bundle_is_refused_or_read_whole(at in any::<Index>(), bit in 0..8u8) {
        let mut bytes = sample();
        let at = at.index(bytes.len());
        bytes[at] ^= 1 << bit;
        accepted_whole(&bytes)?;
    }

    /// Damage inside the archive, with the header checksums made right again so that the damage
    /// reaches the field it hit.
    #[test]
    fn a_damaged_archive_is_refused_or_read_whole(at in any::<Index>(), byte in any::<u8>()) {
        let mut tar = sample_tar();
        let at = at.index(tar.len());
        tar[at] = byte;
        // The sample's headers: the first file's content fits in the block after its header.
        for block in [0..512, 1024..1536] {
            let mut header = tar::Header::new_old();
            header.as_mut_bytes().copy_from_slice(&tar[block.clone()]);
            header.set_cksum();
            tar[block].copy_from_slice(header.as_bytes());
        }
        accepted_whole(&gzip(&tar))?;
    }
}
