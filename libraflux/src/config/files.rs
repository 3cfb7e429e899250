//! Which files make up the configuration, and reading them.
//!
//! - No path: `/etc/libraflux/config.yaml` (required), then `/etc/libraflux/config.d/*.yaml`.
//! - A file: that file alone.
//! - A directory: its `*.yaml`, then its `config.d/*.yaml` if that exists; so `-c /etc/libraflux`
//!   loads what the default loads (plus any other `*.yaml` beside `config.yaml`).
//!
//! Within a directory files load in byte order of their names; names starting with `.` are
//! skipped, and so is anything that is not a regular file (or a link to one).
//!
//! The drop-ins of `config.d` are what a primary replicates to its secondary in a bundle
//! ([`crate::bundle`]); the other files are node-local ([`Layout`]).

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::error::{ConfigError, ConfigErrors};

pub const DEFAULT_DIR: &str = "/etc/libraflux";
pub const MAIN_FILE: &str = "config.yaml";
pub const DROP_IN_DIR: &str = "config.d";

/// One config file's path and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self { path: path.into(), text: text.into() }
    }
}

/// Reads every file of the configuration named by `path` (see the module docs), in load order.
/// A file that cannot be read is an error, and the others are still read, so that all problems
/// are reported together.
pub fn read_sources(path: Option<&Path>) -> Result<Vec<Source>, ConfigErrors> {
    let paths = config_paths(path).map_err(|error| ConfigErrors(vec![error]))?;
    read_paths(paths)
}

/// Reads the node-local files of the configuration named by `path`: what [`read_sources`] reads
/// except the drop-ins of `config.d`, which a bundle replicates (see [`crate::bundle`]).
pub fn node_local_sources(path: Option<&Path>) -> Result<Vec<Source>, ConfigErrors> {
    let layout = layout(path).map_err(|error| ConfigErrors(vec![error]))?;
    read_paths(layout.node_local)
}

fn read_paths(paths: Vec<PathBuf>) -> Result<Vec<Source>, ConfigErrors> {
    let mut sources = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        match fs::read_to_string(&path) {
            Ok(text) => sources.push(Source { path, text }),
            Err(error) => errors.push(ConfigError::new(path, None, format!("cannot read: {error}"))),
        }
    }
    if errors.is_empty() { Ok(sources) } else { Err(ConfigErrors(errors)) }
}

/// The files the configuration named by `path` is made of, in load order, as [`read_sources`]
/// would read them.
pub fn source_paths(path: Option<&Path>) -> Result<Vec<PathBuf>, ConfigError> {
    config_paths(path)
}

/// Where the configuration named by `path` lives: the part that stays on this node, and the
/// drop-in directory that a bundle replicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `config.yaml`, or the file named, or every `*.yaml` of the directory named, in load order.
    pub node_local: Vec<PathBuf>,
    /// `config.d` beside them (it may not exist); `None` when `path` names a single file.
    pub drop_in_dir: Option<PathBuf>,
}

/// The [`Layout`] of the configuration named by `path`; an error when `path` cannot be read.
pub fn layout(path: Option<&Path>) -> Result<Layout, ConfigError> {
    let Some(path) = path else {
        let dir = Path::new(DEFAULT_DIR);
        return Ok(Layout {
            node_local: vec![dir.join(MAIN_FILE)],
            drop_in_dir: Some(dir.join(DROP_IN_DIR)),
        });
    };
    let metadata =
        fs::metadata(path).map_err(|error| ConfigError::new(path, None, format!("cannot read: {error}")))?;
    if !metadata.is_dir() {
        return Ok(Layout { node_local: vec![path.to_path_buf()], drop_in_dir: None });
    }
    Ok(Layout { node_local: listed(path)?, drop_in_dir: Some(path.join(DROP_IN_DIR)) })
}

fn config_paths(path: Option<&Path>) -> Result<Vec<PathBuf>, ConfigError> {
    let Layout { mut node_local, drop_in_dir } = layout(path)?;
    if let Some(dir) = drop_in_dir {
        node_local.extend(listed(&dir)?);
    }
    match path {
        Some(path) if node_local.is_empty() => {
            Err(ConfigError::new(path, None, "no *.yaml files in this directory"))
        }
        _ => Ok(node_local),
    }
}

fn listed(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    yaml_files_in(dir).map_err(|error| ConfigError::new(dir, None, format!("cannot list: {error}")))
}

/// The `*.yaml` files of `dir` in byte order of their names, as the configuration loads them:
/// names starting with `.` are skipped, and so is anything that is not a regular file (or a link
/// to one). None when `dir` does not exist.
pub fn yaml_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if !name.starts_with('.') && name.ends_with(".yaml") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("libraflux-config-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join(DROP_IN_DIR)).expect("create scratch dir");
        dir
    }

    #[test]
    fn a_directory_loads_its_yaml_then_its_drop_ins_in_name_order() {
        let dir = scratch_dir("order");
        for name in ["b.yaml", "a.yaml", ".hidden.yaml", "notes.txt", "config.d/2.yaml", "config.d/1.yaml"] {
            fs::write(dir.join(name), "{}").expect("write scratch file");
        }
        let sources = read_sources(Some(&dir)).expect("read scratch dir");
        let names: Vec<_> =
            sources.iter().map(|source| source.path.strip_prefix(&dir).unwrap().to_owned()).collect();
        assert_eq!(names, ["a.yaml", "b.yaml", "config.d/1.yaml", "config.d/2.yaml"].map(PathBuf::from));
        fs::remove_dir_all(dir).expect("remove scratch dir");
    }

    #[test]
    fn node_local_sources_leave_out_the_drop_ins() {
        let dir = scratch_dir("local");
        for name in ["config.yaml", "z.yaml", "config.d/web.yaml"] {
            fs::write(dir.join(name), "{}").expect("write scratch file");
        }
        let sources = node_local_sources(Some(&dir)).expect("read scratch dir");
        let paths: Vec<_> = sources.into_iter().map(|source| source.path).collect();
        assert_eq!(paths, [dir.join("config.yaml"), dir.join("z.yaml")]);
        let file = dir.join("config.yaml");
        assert_eq!(
            layout(Some(&file)).unwrap(),
            Layout { node_local: vec![file.clone()], drop_in_dir: None }
        );
        assert_eq!(layout(Some(&dir)).unwrap().drop_in_dir, Some(dir.join(DROP_IN_DIR)));
        fs::remove_dir_all(dir).expect("remove scratch dir");
    }

    #[test]
    fn an_empty_directory_is_an_error() {
        let dir = scratch_dir("empty");
        let errors = read_sources(Some(&dir)).unwrap_err();
        assert_eq!(errors.0[0].message, "no *.yaml files in this directory");
        fs::remove_dir_all(dir).expect("remove scratch dir");
    }

    #[test]
    fn a_missing_file_is_reported_without_a_position() {
        let errors = read_sources(Some(Path::new("/nonexistent/libraflux.yaml"))).unwrap_err();
        assert_eq!(errors.0[0].position, None);
        assert!(errors.to_string().starts_with("/nonexistent/libraflux.yaml: cannot read: "), "{errors}");
    }
}
