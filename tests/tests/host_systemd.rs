//! The systemd unit in the repository is accepted by `systemd-analyze verify` without a single
//! warning, runs the daemon as Type=notify, and grants only the capabilities it needs.

use std::process::Command;

const UNIT: &str = include_str!("../../libraflux/systemd/libraflux.service");

fn directive(name: &str) -> Vec<&'static str> {
    UNIT.lines().filter_map(|line| line.strip_prefix(name)?.strip_prefix('=')).collect()
}

#[test]
fn the_unit_verifies_cleanly() {
    let dir = std::env::temp_dir().join(format!("libraflux-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit = UNIT.replace("/usr/bin/libraflux", &libraflux_tests::libraflux_bin());
    let path = dir.join("libraflux.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is missing: install Debian's systemd package (cargo xtask setup does)");
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "systemd-analyze verify failed:\n{said}");
    // verify exits 0 even for directives it ignores; any output is a problem in the unit.
    assert_eq!(said.trim(), "", "systemd-analyze verify warned");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_unit_is_type_notify_with_only_the_needed_capabilities() {
    assert_eq!(directive("Type"), ["notify"]);
    let needed = "CAP_NET_ADMIN CAP_BPF CAP_PERFMON";
    assert_eq!(directive("CapabilityBoundingSet"), [needed]);
    assert_eq!(directive("AmbientCapabilities"), [needed]);
    assert_eq!(directive("NoNewPrivileges"), ["yes"]);
    assert_eq!(directive("ProtectSystem"), ["strict"]);
    assert_eq!(directive("StateDirectory"), ["libraflux"]);
}
