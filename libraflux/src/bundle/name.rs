//! Names: of the files inside a bundle, and of bundle files (`bundle-<sha256>.tar.gz`).

use sha2::{Digest as _, Sha256};

/// Why a name cannot be a bundle file's: [`NameProblem::Unsafe`] names could reach outside the
/// directory a bundle is extracted into or hide there; [`NameProblem::NotYaml`] names are safe
/// but not the `*.yaml` files a bundle carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameProblem {
    Unsafe(&'static str),
    NotYaml,
}

/// The longest name a plain ustar header holds (longer ones would need extension headers, which
/// bundles do not use).
pub const MAX_NAME_BYTES: usize = 100;

/// Checks that `name` is one plain file name matching `[A-Za-z0-9_][A-Za-z0-9._-]*\.yaml`, of
/// at most [`MAX_NAME_BYTES`] bytes.
pub fn check_name(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Unsafe("an empty name"));
    }
    if name.starts_with('/') {
        return Err(NameProblem::Unsafe("an absolute path"));
    }
    if name.split('/').any(|component| component == "..") {
        return Err(NameProblem::Unsafe("a path outside the bundle"));
    }
    if name.contains('/') {
        return Err(NameProblem::Unsafe("a path into a directory"));
    }
    if name.contains('\0') {
        return Err(NameProblem::Unsafe("a NUL byte in the name"));
    }
    if name.starts_with('.') {
        return Err(NameProblem::Unsafe("a hidden name (starting with `.`)"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameProblem::Unsafe("a name longer than 100 bytes"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let first = name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    let yaml = first && name.ends_with(".yaml") && name.chars().all(allowed);
    if yaml { Ok(()) } else { Err(NameProblem::NotYaml) }
}

/// Lowercase hex of the SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

const PREFIX: &str = "bundle-";
const SUFFIX: &str = ".tar.gz";

/// `bundle-<sha256>.tar.gz`.
pub fn file_name(sha256: &str) -> String {
    format!("{PREFIX}{sha256}{SUFFIX}")
}

/// The sha256 that a bundle file's name carries: exactly 64 lowercase hex digits between
/// `bundle-` and `.tar.gz`; `None` for any other name.
pub fn parse_file_name(name: &str) -> Option<String> {
    let sha256 = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let hex = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    hex.then(|| sha256.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_names_of_one_component_pass() {
        for good in [
            "web.yaml",
            "10-web.yaml",
            "_x.yaml",
            "a.b-c_d.yaml",
            "A.yaml",
            &format!("{}.yaml", "x".repeat(95)),
        ] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn names_that_could_escape_or_hide_are_unsafe() {
        let cases = [
            ("", "an empty name"),
            ("/etc/x.yaml", "an absolute path"),
            ("../x.yaml", "a path outside the bundle"),
            ("a/../b.yaml", "a path outside the bundle"),
            ("..", "a path outside the bundle"),
            ("a/b.yaml", "a path into a directory"),
            ("a\0.yaml", "a NUL byte in the name"),
            (".hidden.yaml", "a hidden name (starting with `.`)"),
            (".yaml", "a hidden name (starting with `.`)"),
        ];
        for (name, why) in cases {
            assert_eq!(check_name(name), Err(NameProblem::Unsafe(why)), "{name:?}");
        }
        assert!(matches!(check_name(&format!("{}.yaml", "x".repeat(96))), Err(NameProblem::Unsafe(_))));
    }

    #[test]
    fn other_names_are_not_yaml() {
        for name in ["x.txt", "x.yml", "yaml", "-x.yaml", "a b.yaml", "ü.yaml", "x.yaml~"] {
            assert_eq!(check_name(name), Err(NameProblem::NotYaml), "{name:?}");
        }
    }

    #[test]
    fn a_file_name_carries_exactly_64_lowercase_hex_digits() {
        let sha = sha256_hex(b"");
        assert_eq!(sha, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(parse_file_name(&file_name(&sha)), Some(sha.clone()));
        for bad in [
            format!("bundle-{}.tar.gz", sha.to_uppercase()),
            format!("bundle-{}.tar.gz", &sha[1..]),
            format!("bundle-{sha}0.tar.gz"),
            format!("bundle-{sha}.tar"),
            format!("x-{sha}.tar.gz"),
            format!("bundle-{}g.tar.gz", &sha[1..]),
        ] {
            assert_eq!(parse_file_name(&bad), None, "{bad}");
        }
    }
}
