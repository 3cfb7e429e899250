//! The package's maintainer scripts (libraflux/deb/postinst, prerm, postrm) as dpkg runs them on
//! a machine where systemd is PID 1, which the throwaway-root install of host_deb.rs skips
//! (DPKG_ROOT). Each run is in a mount namespace of its own whose /run is a fresh tmpfs, holding
//! /run/systemd/system or not; systemctl, deb-systemd-helper, deb-systemd-invoke and libraflux
//! are stubs first on PATH that log their arguments. Nothing reaches the machine's systemd.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use libraflux_tests::{Ran, require_root};

const DEB_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../libraflux/deb");
const STUBS: &[&str] = &["systemctl", "deb-systemd-helper", "deb-systemd-invoke", "libraflux"];

/// How the machine looks to a script.
#[derive(Clone, Copy, Debug)]
struct Machine {
    systemd: bool,
    /// The stub that exits 1 instead of 0 (`libraflux`: the new binary refuses the config).
    failing: Option<&'static str>,
    dpkg_root: bool,
}

const SYSTEMD: Machine = Machine { systemd: true, failing: None, dpkg_root: false };

/// Runs `script ARGS...` on `machine`; returns what it printed and the stub calls, in order.
fn run_script(machine: Machine, script: &str, args: &[&str]) -> (Ran, Vec<String>) {
    require_root("a mount namespace with its own /run");
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("libraflux-deb-scripts-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stubs = dir.join("bin");
    std::fs::create_dir_all(&stubs).unwrap();
    let log = dir.join("calls");
    for stub in STUBS {
        let status = if machine.failing == Some(*stub) { 1 } else { 0 };
        let text = format!("#!/bin/sh\necho \"{stub} $*\" >> '{}'\nexit {status}\n", log.display());
        let path = stubs.join(stub);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let setup = if machine.systemd { "mkdir -p /run/systemd/system && " } else { "" };
    let inner = format!("mount -t tmpfs tmpfs /run && {setup}exec sh \"$0\" \"$@\"");
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c", &inner])
        .arg(PathBuf::from(DEB_DIR).join(script))
        .args(args)
        .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", stubs.display()))
        .env_remove("DPKG_ROOT");
    if machine.dpkg_root {
        command.env("DPKG_ROOT", &dir);
    }
    let output = command.output().expect("unshare is missing: install Debian's util-linux");
    let calls = std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_owned).collect();
    std::fs::remove_dir_all(&dir).unwrap();
    (Ran::from(output), calls)
}

/// Runs the script, which must exit 0, and returns the stub calls.
fn calls(machine: Machine, script: &str, args: &[&str]) -> Vec<String> {
    let (ran, calls) = run_script(machine, script, args);
    ran.assert_code(0);
    calls
}

#[test]
fn a_first_install_enables_and_starts_nothing() {
    assert_eq!(
        calls(SYSTEMD, "postinst", &["configure", ""]),
        ["deb-systemd-helper update-state libraflux.service", "systemctl --system daemon-reload"]
    );
}

#[test]
fn an_upgrade_restarts_a_running_daemon_only_once_the_new_binary_accepts_the_config() {
    assert_eq!(
        calls(SYSTEMD, "postinst", &["configure", "0.0.9"]),
        [
            "deb-systemd-helper update-state libraflux.service",
            "systemctl --system daemon-reload",
            "libraflux validate",
            "deb-systemd-invoke try-restart libraflux.service",
        ]
    );

    let refused = Machine { failing: Some("libraflux"), ..SYSTEMD };
    let (ran, calls) = run_script(refused, "postinst", &["configure", "0.0.9"]);
    ran.assert_code(0);
    assert!(!calls.iter().any(|call| call.contains("restart")), "restarted on a refused config: {calls:?}");
    assert!(ran.stderr.contains("was not restarted"), "postinst did not say why: {}", ran.stderr);

    // A restart that fails is reported, and does not fail the upgrade.
    let restart_fails = Machine { failing: Some("deb-systemd-invoke"), ..SYSTEMD };
    let (ran, _) = run_script(restart_fails, "postinst", &["configure", "0.0.9"]);
    ran.assert_code(0);
    assert!(ran.stderr.contains("did not restart"), "postinst did not say so: {}", ran.stderr);
}

#[test]
fn without_systemd_or_into_another_root_the_scripts_leave_systemd_alone() {
    let no_systemd = Machine { systemd: false, ..SYSTEMD };
    assert_eq!(
        calls(no_systemd, "postinst", &["configure", "0.0.9"]),
        ["deb-systemd-helper update-state libraflux.service"]
    );
    assert!(calls(no_systemd, "prerm", &["remove"]).is_empty());

    let other_root = Machine { dpkg_root: true, ..SYSTEMD };
    for (script, args) in [
        ("postinst", &["configure", "0.0.9"][..]),
        ("prerm", &["remove"]),
        ("postrm", &["remove"]),
        ("postrm", &["purge"]),
    ] {
        assert!(
            calls(other_root, script, args).is_empty(),
            "{script} {args:?} called systemd with DPKG_ROOT set"
        );
    }
}

#[test]
fn removal_stops_the_daemon_an_upgrade_does_not_and_purge_drops_the_enable_links() {
    assert_eq!(calls(SYSTEMD, "prerm", &["remove"]), ["deb-systemd-invoke stop libraflux.service"]);
    assert!(calls(SYSTEMD, "prerm", &["upgrade", "0.1.1"]).is_empty());
    assert_eq!(calls(SYSTEMD, "postrm", &["remove"]), ["systemctl --system daemon-reload"]);
    assert_eq!(
        calls(SYSTEMD, "postrm", &["purge"]),
        ["systemctl --system daemon-reload", "deb-systemd-helper purge libraflux.service"]
    );
}
