//! The configuration's JSON Schema against an independent validator: the committed copy in docs/
//! is what `libraflux schema` prints, the examples point editors at it, and Python's `jsonschema`
//! (Debian's python3-jsonschema, with PyYAML reading the YAML) accepts every example and every
//! good corpus file and refuses every bad one whose fault is in one file's shape.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("the workspace")
}

fn schema_path() -> PathBuf {
    workspace().join("docs/libraflux.schema.json")
}

#[test]
fn the_committed_schema_is_what_libraflux_schema_prints() {
    let output =
        Command::new(libraflux_tests::libraflux_bin()).arg("schema").output().expect("run libraflux");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8(output.stdout).expect("UTF-8");
    let committed = fs::read_to_string(schema_path()).expect("docs/libraflux.schema.json");
    assert!(
        printed == committed,
        "docs/libraflux.schema.json is stale: run `libraflux schema > docs/libraflux.schema.json`"
    );
    let schema: Value = serde_json::from_str(&printed).expect("JSON");
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
}

/// The example configurations (docs/examples/*.yaml).
fn examples() -> Vec<PathBuf> {
    let mut examples: Vec<PathBuf> = fs::read_dir(workspace().join("docs/examples"))
        .expect("docs/examples")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 2, "{examples:?}");
    examples
}

#[test]
fn every_example_points_editors_at_the_committed_schema() {
    const MODELINE: &str = "# yaml-language-server: $schema=";
    for example in examples() {
        let text = fs::read_to_string(&example).expect("the example");
        let target = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix(MODELINE))
            .unwrap_or_else(|| panic!("{}: the first line is not `{MODELINE}...`", example.display()));
        let resolved = example.parent().expect("a directory").join(target).canonicalize();
        assert_eq!(resolved.ok(), Some(schema_path()), "{}: {target}", example.display());
    }
}

/// What Python's jsonschema says of each file: `ok`, `invalid` (with the errors) or `unloadable`
/// (PyYAML does not load it).
const VALIDATE: &str = r#"
import json, sys
import yaml
from jsonschema import Draft202012Validator, FormatChecker

request = json.load(sys.stdin)
with open(request["schema"]) as file:
    schema = json.load(file)
Draft202012Validator.check_schema(schema)
validator = Draft202012Validator(schema, format_checker=FormatChecker())
verdicts = {}
for path in request["files"]:
    try:
        with open(path) as file:
            document = yaml.safe_load(file)
    except yaml.YAMLError as error:
        verdicts[path] = {"outcome": "unloadable", "errors": [str(error)]}
        continue
    errors = ["/".join(map(str, error.absolute_path)) + ": " + error.message for error in validator.iter_errors(document)]
    verdicts[path] = {"outcome": "invalid" if errors else "ok", "errors": errors}
json.dump(verdicts, sys.stdout)
"#;

/// Debian's interpreter: python3-jsonschema and python3-yaml are installed for it.
const PYTHON: &str = "/usr/bin/python3";

fn judge(files: &[PathBuf]) -> BTreeMap<PathBuf, Value> {
    let mut child = Command::new(PYTHON)
        .args(["-c", VALIDATE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {PYTHON}: {err}; `cargo xtask setup` installs it"));
    let request = serde_json::json!({ "schema": schema_path(), "files": files });
    child.stdin.take().expect("stdin").write_all(request.to_string().as_bytes()).expect("write the request");
    let output = child.wait_with_output().expect("python");
    assert!(
        output.status.success(),
        "the validator failed (python3-jsonschema and python3-yaml come with `cargo xtask setup`):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verdicts: BTreeMap<String, Value> = serde_json::from_slice(&output.stdout).expect("JSON verdicts");
    verdicts.into_iter().map(|(path, verdict)| (PathBuf::from(path), verdict)).collect()
}

fn corpus() -> PathBuf {
    workspace().join("libraflux/tests/fixtures/config")
}

/// A corpus case's YAML files: the file, or every `*.yaml` under the directory.
fn files_of(case: &Path) -> Vec<PathBuf> {
    if case.is_file() {
        return vec![case.to_owned()];
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(case).expect("a case directory") {
        files.extend(files_of(&entry.expect("an entry").path()));
    }
    files.retain(|path| path.extension().is_some_and(|ext| ext == "yaml"));
    files.sort();
    files
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(dir)
        .expect("the corpus")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.is_dir() || path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    cases.sort();
    cases
}

#[test]
fn the_examples_and_the_good_corpus_are_valid() {
    let mut files = examples();
    for case in cases(&corpus().join("good")) {
        files.extend(files_of(&case));
    }
    assert!(files.len() >= 12, "{files:?}");
    let verdicts = judge(&files);
    let refused: Vec<String> = verdicts
        .iter()
        .filter(|(_, verdict)| verdict["outcome"] != "ok")
        .map(|(path, verdict)| format!("{}: {verdict}", path.display()))
        .collect();
    assert!(refused.is_empty(), "valid configurations the schema refuses:\n{}", refused.join("\n"));
}

/// Bad cases whose every file has a valid shape: the validator refuses them by rules across keys
/// or files (a backend that is its VIP, a port dr cannot rewrite, a backend twice, a family
/// mismatch, `sync` in two files), which the schema leaves to it.
const BEYOND_THE_SCHEMA: &[&str] =
    &["backend_is_vip", "dr_port", "duplicate_backend", "family_mismatch", "sync_twice"];

/// Bad cases whose fault is in the YAML itself (anchors, a duplicate key, two documents, a syntax
/// error): PyYAML reads the first two its own way, so the schema's verdict says nothing.
const YAML_LEVEL: &[&str] = &["anchors", "duplicate_yaml_key", "two_documents", "yaml_syntax"];

#[test]
fn every_bad_case_with_a_fault_in_one_files_shape_is_refused() {
    let cases = cases(&corpus().join("bad"));
    let name = |case: &Path| case.file_stem().and_then(|stem| stem.to_str()).expect("a name").to_owned();
    let names: Vec<String> = cases.iter().map(|case| name(case)).collect();
    for listed in BEYOND_THE_SCHEMA.iter().chain(YAML_LEVEL) {
        assert!(names.iter().any(|name| name == listed), "{listed} is not in the bad corpus any more");
    }
    let files: Vec<PathBuf> = cases.iter().flat_map(|case| files_of(case)).collect();
    let verdicts = judge(&files);
    let mut wrong = Vec::new();
    let mut refused = 0;
    for case in &cases {
        let name = name(case);
        if YAML_LEVEL.contains(&name.as_str()) {
            continue;
        }
        let outcomes: Vec<&Value> = files_of(case).iter().map(|file| &verdicts[file]["outcome"]).collect();
        let invalid = outcomes.iter().any(|outcome| *outcome == "invalid");
        let expected = !BEYOND_THE_SCHEMA.contains(&name.as_str());
        refused += usize::from(invalid);
        if invalid != expected {
            let files: Vec<String> =
                files_of(case).iter().map(|file| format!("{}", verdicts[file])).collect();
            wrong.push(format!("{name}: refused {invalid}, expected {expected}: {}", files.join("; ")));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(refused >= 15, "only {refused} bad cases refused");
}
