//! Arbitrary bytes as the datagram a `udp_ntp` check receives: judging it must never panic,
//! whatever the timestamps (eras, offsets beyond any duration) and whenever our own clock says
//! the request left and the reply came. The first 8 bytes are our send time and the reply's
//! arrival, seconds since 1970 as two u32; the rest is the datagram. The request's transmit
//! timestamp is `01 02 03 04 05 06 07 08`, which a reply echoes as its origin.
//!
//! Run with `cargo xtask fuzz health_ntp` (seeds: replies of chronyd captured in
//! `fuzz/seeds/health_ntp/`, see its README).

#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use libraflux::health::{ntp::NtpCheck, udp::Verdict};

const TRANSMIT: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

fuzz_target!(|data: &[u8]| {
    let Some((clock, reply)) = data.split_first_chunk::<8>() else { return };
    let at = |bytes: &[u8]| {
        UNIX_EPOCH + Duration::from_secs(u64::from(u32::from_be_bytes(bytes.try_into().expect("4 bytes"))))
    };
    let (sent, received): (SystemTime, SystemTime) = (at(&clock[..4]), at(&clock[4..]));
    for max_offset in [None, Some(Duration::from_millis(500)), Some(Duration::ZERO)] {
        let verdict = NtpCheck::new(max_offset).judge(TRANSMIT, sent, received, reply);
        if let Ok(Verdict::Healthy) = verdict {
            assert_eq!(reply.get(24..32), Some(&TRANSMIT[..]), "a healthy reply echoes our timestamp");
        }
    }
});
