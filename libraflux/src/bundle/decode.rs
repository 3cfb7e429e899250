//! The safe reader, for bundle bytes from the network: only plain `*.yaml` files with safe names
//! come out, and no more is decompressed or allocated than [`Limits`] allow, whatever the archive
//! claims about itself.

use std::{
    collections::BTreeSet,
    io::{self, Read},
};

use flate2::bufread::GzDecoder;
use tar::{Archive, EntryType, Header};

use super::{
    BundleError, BundleFile, Entry, Limits,
    name::{NameProblem, check_name},
};

const BLOCK: usize = 512;

/// Decodes a bundle, refusing anything that is not a plain file with a safe `*.yaml` name (see
/// [`check_name`]), a second file of the same name, more files or bytes than `limits` allow, a
/// truncated or malformed archive, data after its end, and content that is not UTF-8. The files
/// come out sorted by name.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Vec<BundleFile>, BundleError> {
    let mut gzip = GzDecoder::new(bytes);
    let budget = limits.max_archive_bytes();
    // A byte past the budget tells an archive that needs more than it from one that ends at it.
    let mut stream = (&mut gzip).take(budget.saturating_add(1));
    let read = read_archive(&mut stream, limits);
    if stream.limit() == 0 {
        let what = "the archive decompresses to more than it may, headers and padding included".to_owned();
        return Err(BundleError::TooLarge { what, max: budget });
    }
    let mut files = read?;
    if !gzip.get_ref().is_empty() {
        return Err(BundleError::malformed("data after the end of the gzip stream"));
    }
    files.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(files)
}

fn read_archive(stream: &mut impl Read, limits: &Limits) -> Result<Vec<BundleFile>, BundleError> {
    let mut archive = Archive::new(stream);
    let mut files = Vec::new();
    let mut names = BTreeSet::new();
    let mut total = 0;
    // Raw: extension headers (pax, GNU long names) come out as entries, to be refused, instead of
    // being applied to the next entry.
    for (offset, entry) in archive.entries().map_err(BundleError::malformed)?.raw(true).enumerate() {
        let index = offset + 1;
        let mut entry = entry.map_err(|err| BundleError::malformed(format_args!("entry {index}: {err}")))?;
        if index > limits.max_files {
            return Err(BundleError::TooManyFiles { max: limits.max_files });
        }
        let file = read_entry(index, &mut entry, limits.max_bytes - total, limits.max_bytes)?;
        if !names.insert(file.name.clone()) {
            return Err(BundleError::DuplicateName { entry: Entry::Archive { index, name: file.name } });
        }
        total += file.bytes.len() as u64;
        files.push(file);
    }
    expect_end(&mut archive.into_inner())?;
    Ok(files)
}

/// One entry, checked before its content is read; `room` is what the files before it left of
/// `max_bytes`.
fn read_entry(
    index: usize,
    entry: &mut tar::Entry<'_, impl Read>,
    room: u64,
    max_bytes: u64,
) -> Result<BundleFile, BundleError> {
    let header = entry.header();
    let as_read =
        || Entry::Archive { index, name: String::from_utf8_lossy(&header.path_bytes()).into_owned() };
    if let Some(kind) = not_regular(header.entry_type()) {
        return Err(BundleError::NotRegularFile { entry: as_read(), kind });
    }
    let name = entry_name(header).map_err(|why| BundleError::UnsafeName { entry: as_read(), why })?;
    let at = || Entry::Archive { index, name: name.clone() };
    match check_name(&name) {
        Ok(()) => {}
        Err(NameProblem::Unsafe(why)) => return Err(BundleError::UnsafeName { entry: at(), why }),
        Err(NameProblem::NotYaml) => return Err(BundleError::NotYamlName { entry: at() }),
    }
    let size = header.entry_size().map_err(|err| BundleError::malformed(format_args!("{}: {err}", at())))?;
    if size > room {
        let total = max_bytes - room + size;
        let what = format!("{} of {size} bytes brings the files to {total} bytes", at());
        return Err(BundleError::TooLarge { what, max: max_bytes });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).expect("bounded by the limits"));
    let read = entry.read_to_end(&mut bytes);
    if read.is_err() || bytes.len() as u64 != size {
        let why = read.err().map_or_else(|| "the archive ends inside it".to_owned(), |err| err.to_string());
        return Err(BundleError::malformed(format_args!("{}: {why}", at())));
    }
    if std::str::from_utf8(&bytes).is_err() {
        return Err(BundleError::NotUtf8 { entry: at() });
    }
    Ok(BundleFile { name, bytes })
}

/// The entry's name as the header spells it, refused when it hides bytes after its NUL
/// terminator or is not UTF-8. A ustar prefix joins the name as a directory, as tar reads it.
fn entry_name(header: &Header) -> Result<String, &'static str> {
    let name = terminated(&header.as_old().name)?;
    let prefix = match header.as_ustar() {
        Some(ustar) => terminated(&ustar.prefix)?,
        None => &[],
    };
    let full = if prefix.is_empty() { name.to_vec() } else { [prefix, b"/", name].concat() };
    String::from_utf8(full).map_err(|_| "a name that is not UTF-8")
}

/// A NUL-terminated header field: what comes before the NUL, which must be followed by NULs only.
fn terminated(field: &[u8]) -> Result<&[u8], &'static str> {
    let end = field.iter().position(|byte| *byte == 0).unwrap_or(field.len());
    if field[end..].iter().any(|byte| *byte != 0) {
        return Err("a NUL byte in the name");
    }
    Ok(&field[..end])
}

/// What an entry is, in words, unless it is a regular file.
fn not_regular(kind: EntryType) -> Option<&'static str> {
    Some(match kind {
        EntryType::Regular => return None,
        EntryType::Link => "a hard link",
        EntryType::Symlink => "a symbolic link",
        EntryType::Char => "a character device",
        EntryType::Block => "a block device",
        EntryType::Directory => "a directory",
        EntryType::Fifo => "a FIFO",
        EntryType::Continuous => "a contiguous file",
        EntryType::XHeader => "a pax extended header",
        EntryType::XGlobalHeader => "a pax global header",
        EntryType::GNULongName => "a GNU long-name header",
        EntryType::GNULongLink => "a GNU long-link header",
        EntryType::GNUSparse => "a GNU sparse file",
        _ => "an entry of an unknown type",
    })
}

/// After the first end-of-archive block (where the entries stopped): the second one, then only
/// zeros (tar pads archives to whole records) up to the end of the stream.
fn expect_end(rest: &mut impl Read) -> Result<(), BundleError> {
    let mut buffer = [0; 8 * BLOCK];
    let mut zeros = 0;
    loop {
        let read = match rest.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(BundleError::malformed(err)),
        };
        if buffer[..read].iter().any(|byte| *byte != 0) {
            return Err(BundleError::malformed("data after the end of the archive"));
        }
        zeros += read;
    }
    if zeros < BLOCK {
        return Err(BundleError::malformed(
            "the archive is truncated: its end-of-archive blocks are missing",
        ));
    }
    Ok(())
}
