//! Arbitrary bytes as configuration files: loading and validating them must never panic, and
//! must end in either a configuration or errors that each name one of the files and, when they
//! have a position, a line and column inside it (1-based). A NUL byte splits the input into
//! `config.yaml` and a drop-in `config.d/10-fuzz.yaml`, so that merging across files is driven
//! too; text that is not UTF-8 never reaches the validator (reading the file refuses it).
//!
//! Run with `cargo xtask fuzz config_validate` (seeds: the config corpus under
//! `libraflux/tests/fixtures/config/` and `docs/examples/`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use libraflux::config::{ConfigError, Source, validate};

const PATHS: [&str; 2] = ["/etc/libraflux/config.yaml", "/etc/libraflux/config.d/10-fuzz.yaml"];

fuzz_target!(|data: &[u8]| {
    let mut sources = Vec::new();
    for (part, path) in data.splitn(2, |byte| *byte == 0).zip(PATHS) {
        let Ok(text) = std::str::from_utf8(part) else { return };
        sources.push(Source::new(path, text));
    }
    match validate(&sources, "fuzz") {
        Ok(config) => {
            assert!(
                config.desired.keys().eq(config.settings.keys()),
                "every desired service has its settings and no more"
            );
            for (key, service) in config.desired.iter() {
                assert_eq!(*key, service.key, "services are filed under their own key");
            }
            for warning in &config.warnings {
                check_place(warning, &sources);
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a refused configuration names at least one error");
            for error in errors.iter() {
                check_place(error, &sources);
            }
        }
    }
});

/// The error names one of the files, and a place inside it.
fn check_place(error: &ConfigError, sources: &[Source]) {
    let source = sources
        .iter()
        .find(|source| source.path == error.file)
        .unwrap_or_else(|| panic!("{error} names a file that is not one of the configuration's"));
    let Some(position) = error.position else { return };
    // Lines end as YAML ends them: CR LF, LF, or a CR alone.
    let lines = source.text.replace("\r\n", "\n").split(['\n', '\r']).count();
    assert!(position.line >= 1 && position.col >= 1, "{error}: positions are 1-based");
    assert!(position.line <= lines, "{error}: line {} of a file of {lines} lines", position.line);
}
