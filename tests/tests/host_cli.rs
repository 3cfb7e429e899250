//! The command line's contract on the host (no IPVS needed): exit codes for usage and config
//! errors, and generated completions and man page that the shells and man accept.

use std::process::Command;

fn libraflux(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(libraflux_tests::libraflux_bin()).args(args).output().expect("run libraflux");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_usage_error_exits_2() {
    let (code, _, stderr) = libraflux(&["apply", "--no-such-flag"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn an_invalid_config_exits_65_with_every_error_located() {
    let dir = std::env::temp_dir().join(format!("libraflux-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "services:\n  - name: web\n    protocol: tcp\n    vip: 10.0.0.300\n    port: 0\n    scheduler: nope\n").unwrap();
    let (code, _, stderr) = libraflux(&["validate", "-c", &path.to_string_lossy()]);
    assert_eq!(code, 65, "{stderr}");
    let located = stderr.lines().filter(|line| line.starts_with(&format!("{}:", path.display()))).count();
    assert!(located >= 3, "every error as file:line:col:\n{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_man_page_is_roff_for_section_8_and_lists_the_commands() {
    let (code, page, stderr) = libraflux(&["manpage"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(page.contains(".TH libraflux 8"), "{page}");
    for command in ["apply", "drain", "daemon", "status"] {
        assert!(page.contains(command), "the man page lists {command}");
    }
}

#[test]
fn bash_completions_parse_and_know_the_commands() {
    let (code, script, stderr) = libraflux(&["completions", "bash"]);
    assert_eq!(code, 0, "{stderr}");
    for command in ["validate", "apply", "preflight", "drain", "undrain", "daemon"] {
        assert!(script.contains(command), "completions know {command}");
    }
    let path = std::env::temp_dir().join(format!("libraflux-completions-{}.bash", std::process::id()));
    std::fs::write(&path, &script).unwrap();
    let checked = Command::new("bash").arg("-n").arg(&path).output().expect("bash");
    assert!(checked.status.success(), "bash -n: {}", String::from_utf8_lossy(&checked.stderr));
    std::fs::remove_file(&path).unwrap();
}
