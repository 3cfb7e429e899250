//! Reading the main file and everything it `include`s, as nginx does:
//!
//! - `include` works in any block and inserts the included directives in its place; each file is
//!   parsed on its own, so a block cannot open in one file and close in another.
//! - A relative path is relative to the directory of the main file (nginx's configuration prefix
//!   when it runs with `-c FILE`), not to the including file.
//! - A path with `*`, `?` or `[` is a pattern, expanded by the C library's glob(3) as nginx expands
//!   it (sorted, a leading `.` matched only explicitly); a pattern that matches nothing includes
//!   nothing. A path without them must exist.
//!
//! nginx has no include-loop check (1.22 crashes with a stack overflow); here a file that is
//! already being read is an error naming the chain of includes.

use std::{
    ffi::{CStr, CString, OsStr},
    io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::parser::{self, Directive};
use crate::convert::ConvertError;

/// More files than this is refused: no configuration has that many, and a bound keeps repeated
/// includes from multiplying without end.
pub const MAX_FILES: usize = 4096;

/// Where the files come from: the disk, or memory for tests and fuzzing.
pub trait Files {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The paths matching `pattern`, sorted.
    fn glob(&self, pattern: &Path) -> io::Result<Vec<PathBuf>>;
    /// One name per file, for the loop check (the canonical path on disk).
    fn identity(&self, path: &Path) -> PathBuf;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn glob(&self, pattern: &Path) -> io::Result<Vec<PathBuf>> {
        glob(pattern)
    }

    fn identity(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// glob(3) with the flags nginx gives it (none): sorted, escapes honoured, no brace expansion.
fn glob(pattern: &Path) -> io::Result<Vec<PathBuf>> {
    let pattern = CString::new(pattern.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path holds a NUL byte"))?;
    // SAFETY: an all-zero glob_t is the documented initial state (no paths, null vectors).
    let mut found: libc::glob_t = unsafe { std::mem::zeroed() };
    // SAFETY: `pattern` is a valid C string for the call; `found` is ours and freed below.
    let status = unsafe { libc::glob(pattern.as_ptr(), 0, None, &raw mut found) };
    let paths = match status {
        0 => (0..found.gl_pathc)
            .map(|index| {
                // SAFETY: glob succeeded, so gl_pathv holds gl_pathc valid C strings.
                let path = unsafe { CStr::from_ptr(*found.gl_pathv.add(index)) };
                PathBuf::from(OsStr::from_bytes(path.to_bytes()))
            })
            .collect(),
        libc::GLOB_NOMATCH => Vec::new(),
        libc::GLOB_NOSPACE => Err(io::Error::new(io::ErrorKind::OutOfMemory, "glob ran out of memory"))?,
        _ => Err(io::Error::other("glob could not read a directory"))?,
    };
    // SAFETY: `found` was filled by glob (or is still zeroed), and is freed once.
    unsafe { libc::globfree(&raw mut found) };
    Ok(paths)
}

/// Reads `main` and every file it includes, and returns the directives with each `include`
/// replaced by what it includes.
pub fn load(main: &Path, files: &dyn Files) -> Result<Vec<Directive>, ConvertError> {
    let file: Arc<Path> = Arc::from(main);
    let text = files.read(main).map_err(|error| ConvertError {
        file: file.clone(),
        position: None,
        message: format!("cannot read: {error}"),
    })?;
    let mut loader = Loader {
        files,
        prefix: main.parent().map(Path::to_path_buf).unwrap_or_default(),
        chain: vec![(files.identity(main), file.clone())],
        read: 1,
    };
    let directives = parser::parse(&file, &text)?;
    loader.expand(directives)
}

struct Loader<'f> {
    files: &'f dyn Files,
    /// Where relative include paths start.
    prefix: PathBuf,
    /// The files being read, outermost first: identity and name.
    chain: Vec<(PathBuf, Arc<Path>)>,
    /// Files read so far.
    read: usize,
}

impl Loader<'_> {
    fn expand(&mut self, directives: Vec<Directive>) -> Result<Vec<Directive>, ConvertError> {
        let mut expanded = Vec::with_capacity(directives.len());
        for mut directive in directives {
            if directive.name.text == "include" && directive.block.is_none() {
                expanded.extend(self.include(&directive)?);
                continue;
            }
            if let Some(block) = directive.block.take() {
                directive.block = Some(self.expand(block)?);
            }
            expanded.push(directive);
        }
        Ok(expanded)
    }

    fn include(&mut self, directive: &Directive) -> Result<Vec<Directive>, ConvertError> {
        let [word] = directive.args.as_slice() else {
            let message =
                format!("include takes one file name or pattern, found {} arguments", directive.args.len());
            return Err(directive.error_at(directive.name.at, message));
        };
        let path = self.prefix.join(&word.text);
        let paths = if word.text.contains(['*', '?', '[']) {
            self.files.glob(&path).map_err(|error| {
                directive.error_at(word.at, format!("include \"{}\": cannot expand: {error}", word.text))
            })?
        } else {
            vec![path]
        };
        let mut included = Vec::new();
        for path in paths {
            let identity = self.files.identity(&path);
            if let Some(start) = self.chain.iter().position(|(known, _)| *known == identity) {
                let mut names: Vec<String> =
                    self.chain[start..].iter().map(|(_, name)| name.display().to_string()).collect();
                names.push(path.display().to_string());
                let message = format!(
                    "include loop: {} is already being read ({})",
                    path.display(),
                    names.join(" -> ")
                );
                return Err(directive.error_at(word.at, message));
            }
            self.read += 1;
            if self.read > MAX_FILES {
                let message =
                    format!("more than {MAX_FILES} files included: is a file included over and over?");
                return Err(directive.error_at(word.at, message));
            }
            let text = self.files.read(&path).map_err(|error| {
                let message = format!("include \"{}\": cannot read {}: {error}", word.text, path.display());
                directive.error_at(word.at, message)
            })?;
            let file: Arc<Path> = Arc::from(path.as_path());
            let directives = parser::parse(&file, &text)?;
            self.chain.push((identity, file));
            let expanded = self.expand(directives);
            self.chain.pop();
            included.extend(expanded?);
        }
        Ok(included)
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, fs};

    use super::*;

    /// Files in memory; a pattern matches by prefix before its `*`.
    struct Memory(BTreeMap<PathBuf, &'static str>);

    impl Files for Memory {
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            self.0
                .get(path)
                .map(|text| text.as_bytes().to_vec())
                .ok_or_else(|| io::ErrorKind::NotFound.into())
        }

        fn glob(&self, pattern: &Path) -> io::Result<Vec<PathBuf>> {
            let pattern = pattern.to_string_lossy();
            let (before, after) = pattern.split_once('*').expect("test patterns hold a *");
            Ok(self
                .0
                .keys()
                .filter(|path| {
                    let path = path.to_string_lossy();
                    path.starts_with(before) && path.ends_with(after)
                })
                .cloned()
                .collect())
        }

        fn identity(&self, path: &Path) -> PathBuf {
            path.to_path_buf()
        }
    }

    fn memory(files: &[(&str, &'static str)]) -> Memory {
        Memory(files.iter().map(|(path, text)| (PathBuf::from(path), *text)).collect())
    }

    fn names(directives: &[Directive]) -> Vec<String> {
        directives
            .iter()
            .flat_map(|directive| {
                let inner = directive.block.as_deref().map(names).unwrap_or_default();
                std::iter::once(format!("{}@{}", directive.text(), directive.place())).chain(inner)
            })
            .collect()
    }

    #[test]
    fn includes_resolve_against_the_main_files_directory_and_splice_in_place() {
        let files = memory(&[
            ("/etc/nginx/nginx.conf", "stream {\n  include stream.d/*.conf;\n  tcp_nodelay on;\n}\n"),
            ("/etc/nginx/stream.d/a.conf", "include upstreams/a.conf;\n"),
            ("/etc/nginx/stream.d/b.conf", "server { listen 80; }\n"),
            ("/etc/nginx/upstreams/a.conf", "upstream a { server 10.0.0.1:80; }\n"),
        ]);
        let directives = load(Path::new("/etc/nginx/nginx.conf"), &files).expect("loads");
        assert_eq!(
            names(&directives),
            [
                "stream@/etc/nginx/nginx.conf:1",
                "upstream a@/etc/nginx/upstreams/a.conf:1",
                "server 10.0.0.1:80@/etc/nginx/upstreams/a.conf:1",
                "server@/etc/nginx/stream.d/b.conf:1",
                "listen 80@/etc/nginx/stream.d/b.conf:1",
                "tcp_nodelay on@/etc/nginx/nginx.conf:3",
            ]
        );
    }

    #[test]
    fn a_loop_is_an_error_naming_the_chain() {
        let files = memory(&[
            ("/n/nginx.conf", "stream {\n  include a.conf;\n}\n"),
            ("/n/a.conf", "include b.conf;\n"),
            ("/n/b.conf", "# back again\n  include a.conf;\n"),
        ]);
        let error = load(Path::new("/n/nginx.conf"), &files).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/n/b.conf:2:11: include loop: /n/a.conf is already being read (/n/a.conf -> /n/b.conf -> /n/a.conf)"
        );
    }

    #[test]
    fn a_file_may_be_included_twice_without_a_loop() {
        let files = memory(&[("/n/nginx.conf", "include a.conf;\ninclude a.conf;\n"), ("/n/a.conf", "x;\n")]);
        assert_eq!(load(Path::new("/n/nginx.conf"), &files).unwrap().len(), 2);
    }

    #[test]
    fn a_missing_file_is_an_error_but_an_empty_pattern_is_not() {
        let files =
            memory(&[("/n/nginx.conf", "include none/*.conf;\nstream {\n    include upstreams.conf;\n}\n")]);
        let error = load(Path::new("/n/nginx.conf"), &files).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "/n/nginx.conf:3:13: include \"upstreams.conf\": cannot read /n/upstreams.conf: "
            ),
            "{error}"
        );
        let error = load(Path::new("/n/missing.conf"), &files).unwrap_err().to_string();
        assert!(error.starts_with("/n/missing.conf: cannot read: "), "{error}");
    }

    #[test]
    fn include_takes_one_argument() {
        let files = memory(&[("/n/nginx.conf", "include a.conf b.conf;\n")]);
        assert_eq!(
            load(Path::new("/n/nginx.conf"), &files).unwrap_err().to_string(),
            "/n/nginx.conf:1:1: include takes one file name or pattern, found 2 arguments"
        );
    }

    #[test]
    fn glob_is_the_c_librarys_sorted_and_skips_dot_files() {
        let dir = std::env::temp_dir().join(format!("libraflux-convert-glob-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("d")).unwrap();
        for name in ["b.conf", "a.conf", ".hidden.conf", "c.txt", "B.conf", "a[1].conf"] {
            fs::write(dir.join("d").join(name), "").unwrap();
        }
        let found = glob(&dir.join("d/*.conf")).unwrap();
        let names: Vec<_> =
            found.iter().map(|path| path.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["B.conf", "a.conf", "a[1].conf", "b.conf"], "byte order, no dot files");
        let found = glob(&dir.join("d/a\\[1\\].conf")).unwrap();
        assert_eq!(found.len(), 1, "backslash escapes a bracket: {found:?}");
        assert!(glob(&dir.join("none/*.conf")).unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }
}
