//! Node-local sections: what describes one node (its name, interfaces, metrics endpoint, control
//! socket, snapshots, replication, where a fleet's configuration comes from, connection sync, and what it announces through its BIRD) and so must stay
//! in its own `config.yaml`. A replicated file (a `config.d` drop-in, hence a bundle's file) must
//! not set any of them, or the primary would configure its secondary as itself.

use marked_yaml::Node;

use super::{
    ConfigError, ConfigErrors, Source,
    decode::{self, Diagnostics},
};

/// The top-level sections that only a node's own files may set.
pub const NODE_LOCAL_SECTIONS: &[&str] =
    &["node", "metrics", "control", "snapshots", "replication", "source", "sync", "announce"];

/// Each node-local section that `source` sets, as an error at its key; the file's own errors
/// when it is not YAML with a mapping at the top.
pub fn node_local_sections(source: &Source) -> Result<Vec<ConfigError>, ConfigErrors> {
    let mut diagnostics = Diagnostics::new(&source.path);
    let Some(root) = decode::parse_file(&source.text, &mut diagnostics) else {
        decode::within_files(&mut diagnostics.errors, std::slice::from_ref(source));
        return Err(ConfigErrors(diagnostics.errors));
    };
    let Node::Mapping(mapping) = &root else { return Ok(Vec::new()) };
    for key in mapping.keys().filter(|key| NODE_LOCAL_SECTIONS.contains(&key.as_str())) {
        let message = format!(
            "{:?} is node-local: it belongs in the node's own config.yaml, and a replicated file \
             (config.d, a bundle) must not set it",
            key.as_str()
        );
        diagnostics.error(decode::position(key.span()), message);
    }
    decode::within_files(&mut diagnostics.errors, std::slice::from_ref(source));
    Ok(diagnostics.errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Position;

    #[test]
    fn node_local_keys_are_found_where_they_are_written() {
        let source = Source::new("web.yaml", "services: []\n\nmetrics:\n  listen: 127.0.0.1:1\nnode: {}\n");
        let found = node_local_sections(&source).expect("parses");
        let places: Vec<_> = found.iter().map(|error| error.position).collect();
        assert_eq!(places, [Some(Position { line: 3, col: 1 }), Some(Position { line: 5, col: 1 })]);
        assert!(found[0].to_string().starts_with("web.yaml:3:1: \"metrics\" is node-local"), "{}", found[0]);
    }

    #[test]
    fn replicable_sections_and_empty_files_pass() {
        for text in ["", "services: []\nlimits: {}\nignore: []\n"] {
            assert_eq!(node_local_sections(&Source::new("a.yaml", text)), Ok(Vec::new()), "{text:?}");
        }
    }

    #[test]
    fn a_file_that_is_not_yaml_gives_its_parse_error() {
        let errors = node_local_sections(&Source::new("a.yaml", "services: [\n")).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors}");
    }
}
