//! The include file LibraFlux owns: two static protocols, `libraflux4` and `libraflux6`, with a
//! blackhole route per announced VIP. Both are always there, empty when nothing is announced, so
//! that BIRD's own configuration can name them in its export filters whatever is announced.
//! A blackhole route is enough: the node's BGP protocols export it with their own address as the
//! next hop (eBGP always does; an iBGP session needs `next hop self`).

use std::{
    collections::BTreeSet,
    io,
    net::IpAddr,
    path::{Path, PathBuf},
};

/// The static protocol with the announced IPv4 VIPs.
pub const PROTOCOL_V4: &str = "libraflux4";
/// The static protocol with the announced IPv6 VIPs.
pub const PROTOCOL_V6: &str = "libraflux6";

/// The file's text announcing `vips`. Deterministic: the same VIPs give the same bytes.
pub fn render(vips: &BTreeSet<IpAddr>) -> String {
    let mut text = String::from(
        "# Written by LibraFlux (announce: in its configuration); do not edit, it is replaced whole.\n\
         # The VIPs this node announces now, one route each (docs/fleet.md).\n",
    );
    for (protocol, channel, v4) in [(PROTOCOL_V4, "ipv4", true), (PROTOCOL_V6, "ipv6", false)] {
        text.push_str(&format!("protocol static {protocol} {{\n  {channel};\n"));
        for vip in vips.iter().filter(|vip| vip.is_ipv4() == v4) {
            let length = if v4 { 32 } else { 128 };
            text.push_str(&format!("  route {vip}/{length} blackhole;\n"));
        }
        text.push_str("}\n");
    }
    text
}

/// A step on the include file that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}: {source}", path.display())]
pub struct FileError {
    pub step: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl From<crate::state_file::WriteError> for FileError {
    fn from((step, path, source): crate::state_file::WriteError) -> Self {
        Self { step, path, source }
    }
}

/// The file's bytes; `None` when it does not exist.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError { step: "reading", path: path.to_owned(), source }),
    }
}

/// Replaces the file with `bytes` atomically (temp file, fsync, rename, fsync the directory),
/// mode 0644 so that BIRD, which runs as its own user, can read it.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let (dir, name) = split(path)?;
    crate::state_file::write_atomic_with_mode(dir, name, bytes, 0o644)?;
    Ok(())
}

/// Puts `previous` back (what [`read`] returned before a write): its bytes, or no file.
pub fn restore(path: &Path, previous: Option<&[u8]>) -> Result<(), FileError> {
    match previous {
        Some(bytes) => write(path, bytes),
        None => match std::fs::remove_file(path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(FileError { step: "removing", path: path.to_owned(), source: err })
            }
            _ => Ok(()),
        },
    }
}

fn split(path: &Path) -> Result<(&Path, &str), FileError> {
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty());
    match (dir, path.file_name().and_then(|name| name.to_str())) {
        (Some(dir), Some(name)) => Ok((dir, name)),
        _ => Err(FileError {
            step: "writing",
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file path in a directory"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn vips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|vip| vip.parse().unwrap()).collect()
    }

    #[test]
    fn each_family_has_its_protocol_and_a_route_per_vip() {
        let text = render(&vips(&["2001:db8::10", "192.0.2.10", "192.0.2.9"]));
        let body: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "protocol static libraflux4 {",
                "  ipv4;",
                "  route 192.0.2.9/32 blackhole;",
                "  route 192.0.2.10/32 blackhole;",
                "}",
                "protocol static libraflux6 {",
                "  ipv6;",
                "  route 2001:db8::10/128 blackhole;",
                "}",
            ]
        );
        let empty = render(&BTreeSet::new());
        assert!(empty.contains("protocol static libraflux4 {\n  ipv4;\n}\n"), "{empty}");
        assert!(empty.contains("protocol static libraflux6 {\n  ipv6;\n}\n"), "{empty}");
    }

    #[test]
    fn write_replaces_readably_and_restore_puts_back_what_was_there() {
        let dir = crate::announce::tests::Scratch::new("file");
        let path = dir.path().join("bird-announce.conf");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, b"one").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o044, 0o044, "BIRD's user must read it: {mode:o}");
        let before = read(&path).unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some(&b"two"[..]));
        restore(&path, before.as_deref()).unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some(&b"one"[..]));
        restore(&path, None).unwrap();
        assert_eq!(read(&path).unwrap(), None, "no file before: none after");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "no temp file left: {leftovers:?}");
        let err = write(Path::new("relative"), b"x").unwrap_err();
        assert!(err.to_string().starts_with("writing relative:"), "{err}");
    }
}
