//! The configuration a secondary would run: its own node-local files plus a bundle's files in
//! place of its `config.d`, through the one validation every configuration goes through.

use std::path::{Path, PathBuf};

use super::BundleFile;
use crate::config::{self, Config, ConfigError, ConfigErrors, Source};

/// Validates `node_local` (see [`config::node_local_sources`]) with `files` as the drop-ins,
/// loaded after them in name order as `config.d` would be. A bundle file's errors name it
/// `<origin>:<name>` (so `bundle-….tar.gz:web.yaml:3:5: …`); a node-local section set by a
/// bundle file is an error too, reported with the others.
pub fn validate_with(
    node_local: Vec<Source>,
    files: &[BundleFile],
    origin: &Path,
) -> Result<Config, ConfigErrors> {
    let mut sorted: Vec<&BundleFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut errors = Vec::new();
    let mut replicated = Vec::with_capacity(sorted.len());
    for file in sorted {
        let path = PathBuf::from(format!("{}:{}", origin.display(), file.name));
        match String::from_utf8(file.bytes.clone()) {
            Ok(text) => replicated.push(Source { path, text }),
            Err(_) => errors.push(ConfigError::new(path, None, "the content is not UTF-8 text")),
        }
    }
    validate_replicated(node_local, replicated, errors)
}

/// Validates `node_local` with `replicated` as the drop-ins (a bundle's files, or a secondary's
/// replicated configuration in force), adding to `errors` a node-local section set by a
/// replicated file; every error reported at once, in file order.
pub fn validate_replicated(
    node_local: Vec<Source>,
    replicated: Vec<Source>,
    mut errors: Vec<ConfigError>,
) -> Result<Config, ConfigErrors> {
    for source in &replicated {
        // A file that is not YAML is reported by `validate` below.
        errors.extend(config::node_local_sections(source).unwrap_or_default());
    }
    let sources = [node_local, replicated].concat();
    let validated = config::validate(&sources, &config::system_hostname());
    if errors.is_empty() {
        return validated;
    }
    errors.extend(validated.err().map(|invalid| invalid.0).unwrap_or_default());
    let order: Vec<&Path> = sources.iter().map(|source| source.path.as_path()).collect();
    config::sort_by_file(&mut errors, &order);
    Err(ConfigErrors(errors))
}
