//! Golden files for `libraflux convert nginx`. Each `fixtures/nginx/corpus/CASE/` (checked by the
//! real `nginx -t` in tests/tests/host_convert.rs) and `fixtures/nginx/corpus-plus/CASE/` (what
//! the Debian nginx cannot check: NGINX Plus, Lua, njs) holds an `nginx.conf` and what it
//! includes, an optional `vips` file (one `--vip` a line), and `expected/`: the YAML files the
//! conversion writes and `warnings.txt`. Each `fixtures/nginx/bad/NAME/` must fail with exactly
//! the error in `bad/NAME.expected`. Paths are written relative to the case's directory.
//! `UPDATE_GOLDEN=1 cargo test -p libraflux --test convert_nginx` rewrites the expected files.

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
};

use libraflux::convert::{
    nginx::{self, Options},
    output,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nginx")
}

fn cases(dir: &str) -> Vec<PathBuf> {
    common::case_dirs(&fixtures().join(dir))
}

fn options(case: &Path) -> Options {
    let vips = fs::read_to_string(case.join("vips")).unwrap_or_default();
    Options { vips: vips.lines().map(|line| line.parse().expect("a VIP in vips")).collect() }
}

/// The files a case converts to, by name, and its warnings, with the case's path taken out.
fn convert(case: &Path) -> Vec<(String, String)> {
    let conversion = nginx::convert(&case.join("nginx.conf"), &options(case))
        .unwrap_or_else(|error| panic!("{} does not convert: {error}", case.display()));
    let files = output::render(&conversion, Path::new(""), "libraflux convert nginx");
    let validated = output::validate(&files).unwrap_or_else(|errors| panic!("{}:\n{errors}", case.display()));
    let prefix = format!("{}/", case.display());
    let mut outputs: Vec<(String, String)> =
        files.iter().map(|file| (file.path.display().to_string(), file.text.replace(&prefix, ""))).collect();
    let warnings: String = conversion
        .warnings
        .iter()
        .chain(&validated)
        .map(|warning| format!("{warning}\n").replace(&prefix, ""))
        .collect();
    outputs.push(("warnings.txt".to_owned(), warnings));
    outputs
}

/// The difference between the golden file at `path` and `actual`, if any.
fn mismatch(path: &Path, actual: &str) -> Option<String> {
    let expected = fs::read_to_string(path).unwrap_or_default();
    (actual != expected).then(|| format!("{}:\n--- expected\n{expected}--- actual\n{actual}", path.display()))
}

#[test]
fn the_corpus_converts_to_its_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    let cases: Vec<PathBuf> = cases("corpus").into_iter().chain(cases("corpus-plus")).collect();
    assert!(cases.len() >= 5, "the corpus shrank to {} cases", cases.len());
    for case in cases {
        let expected_dir = case.join("expected");
        let outputs = convert(&case);
        if update {
            let _ = fs::remove_dir_all(&expected_dir);
            fs::create_dir_all(&expected_dir).expect("create expected/");
            for (name, text) in &outputs {
                fs::write(expected_dir.join(name), text).expect("write a golden file");
            }
            continue;
        }
        let mut expected_names: Vec<String> = fs::read_dir(&expected_dir)
            .map(|entries| {
                entries.map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect()
            })
            .unwrap_or_default();
        expected_names.sort();
        let mut names: Vec<String> = outputs.iter().map(|(name, _)| name.clone()).collect();
        names.sort();
        if names != expected_names {
            mismatches.push(format!("{}: files {names:?}, expected {expected_names:?}", case.display()));
        }
        for (name, actual) in outputs {
            let expected = fs::read_to_string(expected_dir.join(&name)).unwrap_or_default();
            if actual != expected {
                mismatches.push(format!(
                    "{}/{name}:\n--- expected\n{expected}--- actual\n{actual}",
                    case.display()
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn malformed_inputs_fail_with_their_errors() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    let cases = cases("bad");
    assert!(cases.len() >= 8, "the bad corpus shrank to {} cases", cases.len());
    for case in cases {
        let prefix = format!("{}/", case.display());
        let actual = match nginx::convert(&case.join("nginx.conf"), &Options::default()) {
            Ok(_) => format!("{} converted, but it is in the bad corpus\n", case.display()),
            Err(error) => format!("{error}\n").replace(&prefix, ""),
        };
        let expected_path = case.with_extension("expected");
        if update {
            fs::write(&expected_path, &actual).expect("write .expected");
        } else {
            mismatches.extend(mismatch(&expected_path, &actual));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn an_include_that_matches_a_directory_cannot_be_read() {
    let dir = std::env::temp_dir().join(format!("libraflux-convert-dir-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("stream.d/old.conf")).unwrap();
    fs::write(dir.join("nginx.conf"), "stream {\n    include stream.d/*.conf;\n}\n").unwrap();
    let error = nginx::convert(&dir.join("nginx.conf"), &Options::default()).unwrap_err().to_string();
    let expected = format!(
        "{0}/nginx.conf:2:13: include \"stream.d/*.conf\": cannot read {0}/stream.d/old.conf: Is a directory",
        dir.display()
    );
    assert!(error.starts_with(&expected), "{error}");
    fs::remove_dir_all(dir).unwrap();
}
