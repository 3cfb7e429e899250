//! Golden files for the plan renderers. Each `fixtures/plan/CASE/` holds `desired.yaml` (a config)
//! and `observed.json` (the kernel's table as `BTreeMap<ServiceKey, Service>`); the plan between
//! them must render exactly as `plan.txt`, `plan.colour.txt` and `plan.json`.
//! `UPDATE_GOLDEN=1 cargo test --test plan_golden` rewrites them.

mod common;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use libraflux::{
    config,
    model::{Service, ServiceKey},
    plan::{self, Plan},
};

fn cases() -> Vec<PathBuf> {
    common::case_dirs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plan"))
}

fn plan_of(case: &Path) -> Plan {
    let config = config::load(Some(&case.join("desired.yaml"))).unwrap_or_else(|errors| panic!("{errors}"));
    let observed = fs::read_to_string(case.join("observed.json")).expect("read observed.json");
    let observed: BTreeMap<ServiceKey, Service> =
        serde_json::from_str(&observed).unwrap_or_else(|error| panic!("{}: {error}", case.display()));
    plan::plan(&config.desired, &observed, &config.ignore)
}

#[test]
fn plans_render_exactly_as_their_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    let cases = cases();
    assert!(cases.len() >= 3, "the plan fixtures shrank to {} cases", cases.len());
    for case in cases {
        let plan = plan_of(&case);
        let outputs = [
            ("plan.txt", plan::render_text(&plan, false)),
            ("plan.colour.txt", plan::render_text(&plan, true)),
            ("plan.json", plan::render_json(&plan)),
        ];
        for (name, actual) in outputs {
            let path = case.join(name);
            if update {
                fs::write(&path, &actual).expect("write golden file");
                continue;
            }
            let expected = fs::read_to_string(&path).unwrap_or_default();
            if actual != expected {
                mismatches.push(format!("{}:\n--- expected\n{expected}--- actual\n{actual}", path.display()));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn the_json_plan_carries_its_schema_version() {
    for case in cases() {
        let json: serde_json::Value =
            serde_json::from_str(&plan::render_json(&plan_of(&case))).expect("the JSON plan parses");
        assert_eq!(json["schema"], plan::JSON_SCHEMA_VERSION);
    }
}
