//! The keepalived configuration docs/ha.md shows (docs/examples/keepalived.conf) is one that
//! keepalived itself accepts, owns the VIP by VRRP only, and calls LibraFlux commands that exist.

use std::process::Command;

use libraflux_tests::{NetNs, libraflux_bin, require_root};

fn example() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/examples/keepalived.conf");
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// `keepalived --config-test` of `text` in `netns` (which has the example's `eth0`): its exit
/// code and what it printed.
fn config_test(netns: &NetNs, name: &str, text: &str) -> (i32, String) {
    let path = std::env::temp_dir().join(format!("{}-{name}.conf", netns.name()));
    std::fs::write(&path, text).unwrap();
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns.name(),
            "keepalived",
            "--config-test",
            "--log-console",
            "--log-detail",
            "-f",
        ])
        .arg(&path)
        .output()
        .expect("keepalived is missing: install Debian's keepalived package (cargo xtask setup does)");
    let _ = std::fs::remove_file(&path);
    let said =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), said)
}

#[test]
fn the_example_keepalived_config_passes_keepalived_s_own_config_test() {
    require_root("keepalived --config-test in a network namespace");
    let netns = NetNs::new("keepalived");
    // The example's interface; a veth, since the host may lack the dummy module.
    netns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]);
    netns.ip(&["link", "set", "eth0", "up"]);
    let text = example();
    let (code, said) = config_test(&netns, "example", &text);
    assert_eq!(code, 0, "keepalived --config-test refused the example:\n{said}");
    assert!(!said.contains("Unknown keyword"), "{said}");
    // The same check refuses a misspelt keyword, so it is not passing everything.
    let (code, said) = config_test(&netns, "misspelt", &text.replace("priority 150", "priorty 150"));
    assert_ne!(code, 0, "a misspelt keyword passed:\n{said}");
    assert!(said.contains("Unknown keyword 'priorty'"), "{said}");
}

#[test]
fn the_example_leaves_ipvs_to_libraflux_and_its_notify_commands_exist() {
    let text = example();
    let active: Vec<&str> =
        text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).collect();
    for owned_by_libraflux in ["virtual_server", "lvs_sync_daemon", "real_server"] {
        assert!(
            !active.iter().any(|line| line.starts_with(owned_by_libraflux)),
            "{owned_by_libraflux} in the example"
        );
    }
    let mut notified = Vec::new();
    for line in &active {
        let Some((keyword, command)) = line.split_once(' ') else { continue };
        if !keyword.starts_with("notify") {
            continue;
        }
        let command = command.trim_matches('"');
        let args: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(args.first(), Some(&"/usr/bin/libraflux"), "{line}");
        // The command line parses: the built binary accepts the same arguments (with --help, so
        // that nothing is run).
        let output = Command::new(libraflux_bin()).args(&args[1..]).arg("--help").output().unwrap();
        assert!(output.status.success(), "{line}: {}", String::from_utf8_lossy(&output.stderr));
        notified.push((keyword, args[1..].join(" ")));
    }
    assert_eq!(
        notified,
        [
            ("notify_master", "sync master".to_owned()),
            ("notify_backup", "sync backup".to_owned()),
            ("notify_fault", "sync backup".to_owned())
        ]
    );
}
