//! `libraflux convert nginx` on the host.
//!
//! The corpus (`libraflux/tests/fixtures/nginx/corpus/`) is nginx-valid: every case passes the real
//! `nginx -t` (Debian's nginx with libnginx-mod-stream). nginx -t binds its listen addresses, so it
//! runs in a network namespace made for it whose loopback holds them, with `-p` pointing at a copy
//! of the case in a temporary prefix (logs, the pid file that nginx -t creates, and the http temp
//! directories the corpus names land there) and `-e stderr`: nothing touches /etc/nginx, /run,
//! /var or the host's network. nginx -t does not daemonize and exits; a run that outlives its deadline
//! is killed by its pid. The nginx service (if the package started one) plays no part.
//!
//! Then the command line: files written and exit 2 with warnings, 0 without, 3 for files that
//! exist, 65 with `file:line:col` for what does not parse, and nothing written then.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use libraflux_tests::{NetNs, require_root};

const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../libraflux/tests/fixtures/nginx")
}

fn corpus() -> Vec<PathBuf> {
    let root = fixtures().join("corpus");
    let mut cases: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("libraflux-convert-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A namespace whose loopback holds `addresses`.
fn namespace_with(addresses: &[String]) -> NetNs {
    let netns = NetNs::new("nginx");
    for address in addresses {
        let prefix = if address.contains(':') { "128" } else { "32" };
        netns.ip(&["addr", "add", &format!("{address}/{prefix}"), "dev", "lo", "nodad"]);
    }
    netns
}

/// The case in a fresh prefix: its files, `logs/`, `temp/`, and a throwaway certificate in `certs/`.
fn prefix_for(case: &Path, root: &Path) -> PathBuf {
    let prefix = root.join(case.file_name().unwrap());
    copy_dir(case, &prefix);
    let _ = fs::remove_dir_all(prefix.join("expected"));
    fs::create_dir_all(prefix.join("logs")).unwrap();
    fs::create_dir_all(prefix.join("temp")).unwrap();
    fs::create_dir_all(prefix.join("certs")).unwrap();
    let (key, cert) = (prefix.join("certs/proxy.key"), prefix.join("certs/proxy.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=proxy.test", "-days", "1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("run openssl (is it installed?)");
    assert!(status.success(), "openssl req failed");
    prefix
}

/// `nginx -t` on `prefix/nginx.conf` inside `netns`: its exit status and stderr. Killed (by its
/// pid) if it runs past the deadline, so no nginx outlives the test.
fn nginx_t(netns: &NetNs, prefix: &Path) -> (bool, String) {
    let prefix_arg = format!("{}/", prefix.display());
    let conf = prefix.join("nginx.conf");
    // The pid file too stays in the prefix: nginx -t creates it.
    let load = format!("load_module {STREAM_MODULE}; pid {}nginx.pid;", prefix_arg);
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns.name(),
            "nginx",
            "-t",
            "-q",
            "-e",
            "stderr",
            "-p",
            &prefix_arg,
            "-g",
            &load,
        ])
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nginx (install nginx and libnginx-mod-stream: cargo xtask setup)");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nginx -t on {} ran past 30 s and was killed", conf.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr)
}

#[test]
fn every_corpus_config_passes_nginx_t_in_its_own_namespace() {
    require_root("nginx -t binds its listen addresses in a network namespace");
    assert!(Path::new(STREAM_MODULE).exists(), "{STREAM_MODULE} is missing: install libnginx-mod-stream");
    let root = scratch("nginx-t");
    let cases = corpus();
    assert!(cases.len() >= 3, "the corpus shrank to {} cases", cases.len());
    for case in cases {
        let addresses: Vec<String> = fs::read_to_string(case.join("listen-addresses"))
            .unwrap_or_else(|error| panic!("{}/listen-addresses: {error}", case.display()))
            .lines()
            .map(str::to_owned)
            .collect();
        let prefix = prefix_for(&case, &root);
        let netns = namespace_with(&addresses);
        let (ok, stderr) = nginx_t(&netns, &prefix);
        assert!(ok, "nginx -t refuses {}:\n{stderr}", case.display());
        // Without its addresses the same case fails: nginx -t really binds them.
        let (ok, stderr) = nginx_t(&NetNs::new("bare"), &prefix);
        assert!(
            !ok && stderr.contains("bind()"),
            "nginx -t passed {} without its addresses:\n{stderr}",
            case.display()
        );
    }
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn nginx_t_refuses_a_malformed_input_of_the_bad_corpus() {
    require_root("nginx -t runs in a network namespace");
    let root = scratch("nginx-t-bad");
    let prefix = prefix_for(&fixtures().join("bad/missing_semicolon"), &root);
    let (ok, stderr) = nginx_t(&namespace_with(&["192.0.2.1".to_owned()]), &prefix);
    assert!(!ok, "nginx -t accepted a missing semicolon:\n{stderr}");
    fs::remove_dir_all(root).unwrap();
}

fn libraflux(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(libraflux_tests::libraflux_bin()).args(args).output().expect("run libraflux");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `libraflux convert nginx --input INPUT --output OUT EXTRA...`.
fn convert(input: &Path, out: &Path, extra: &[&str]) -> (i32, String, String) {
    let (input, out) = (input.to_string_lossy(), out.to_string_lossy());
    let args: Vec<&str> = ["convert", "nginx", "--input", &input, "--output", &out]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    libraflux(&args)
}

fn golden(case: &str, name: &str) -> String {
    fs::read_to_string(fixtures().join("corpus").join(case).join("expected").join(name)).unwrap()
}

#[test]
fn convert_writes_the_golden_files_exits_2_with_warnings_and_the_result_validates() {
    let case = fixtures().join("corpus/debian");
    let input = case.join("nginx.conf");
    let out = scratch("write").join("config.d");
    let (code, stdout, stderr) = convert(&input, &out, &[]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    let prefix = format!("{}/", case.display());
    let warnings: String = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("warning: "))
        .map(|line| format!("{}\n", line.replace(&prefix, "")))
        .collect();
    assert_eq!(warnings, golden("debian", "warnings.txt"));
    let mut written: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "dns_resolvers-udp-53.yaml",
            "dns_resolvers_v6-udp-53-v6.yaml",
            "proxy-tcp-993.yaml",
            "web_tls-tcp-443.yaml"
        ]
    );
    for name in &written {
        let text = fs::read_to_string(out.join(name)).unwrap();
        assert!(text.starts_with("# Converted by `libraflux convert nginx` from /"), "{name}: {text}");
        assert_eq!(text.replace(&prefix, ""), golden("debian", name), "{name}");
    }
    let summary =
        format!("converted 5 services from 4 servers into 4 files, {} warnings", warnings.lines().count());
    assert!(stdout.contains(&summary), "{stdout}");
    let (code, stdout, stderr) = libraflux(&["validate", "-c", &out.to_string_lossy()]);
    assert_eq!(code, 0, "libraflux validate refuses the converted files:\n{stdout}{stderr}");
    assert!(stdout.contains("5 services"), "{stdout}");
    fs::remove_dir_all(out.parent().unwrap()).unwrap();
}

#[test]
fn an_existing_file_is_kept_without_force_and_replaced_with_it() {
    let input = fixtures().join("corpus/vm-apply/nginx.conf");
    let out = scratch("force");
    let (code, stdout, stderr) = convert(&input, &out, &[]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    let web = out.join("web-tcp-80.yaml");
    fs::write(&web, "# edited by hand\n").unwrap();
    let (code, _, stderr) = convert(&input, &out, &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("web-tcp-80.yaml") && stderr.contains("--force"), "{stderr}");
    assert_eq!(fs::read_to_string(&web).unwrap(), "# edited by hand\n", "kept without --force");
    let (code, _, stderr) = convert(&input, &out, &["--force"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(fs::read_to_string(&web).unwrap().starts_with("# Converted by"), "replaced with --force");
    fs::remove_dir_all(out).unwrap();
}

#[test]
fn a_dry_run_prints_the_files_and_writes_nothing() {
    let input = fixtures().join("corpus/vm-apply/nginx.conf");
    let out = scratch("dry").join("never");
    let (code, stdout, stderr) = convert(&input, &out, &["--dry-run"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("==> {}/web-tcp-80.yaml <==\n# Converted by", out.display())),
        "{stdout}"
    );
    assert!(stderr.contains("would convert 4 services from 4 servers into 4 files, 2 warnings"), "{stderr}");
    assert!(!out.exists(), "a dry run must not create {}", out.display());
    fs::remove_dir_all(out.parent().unwrap()).unwrap();
}

#[test]
fn a_clean_conversion_exits_0_and_json_lists_files_and_warnings() {
    let dir = scratch("clean");
    let input = dir.join("nginx.conf");
    fs::write(
        &input,
        "events {}\nstream {\n  upstream app { server 10.0.0.1:80; server 10.0.0.2:80; }\n  server { listen 192.0.2.1:80; proxy_pass app; }\n}\n",
    )
    .unwrap();
    let out = dir.join("out");
    let (code, stdout, stderr) = convert(&input, &out, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let (code, stdout, stderr) = convert(&input, &out, &["--force", "--output-format", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(report["files"][0]["services"], serde_json::json!(["app-tcp-80"]), "{report:#}");
    assert_eq!(report["files"][0]["source"]["line"], 4, "{report:#}");
    assert_eq!(report["warnings"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["written"], true, "{report:#}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unparseable_or_unreadable_input_exits_65_located_and_writes_nothing() {
    let out = scratch("bad").join("out");
    let case = fixtures().join("bad/missing_semicolon");
    let input = case.join("nginx.conf");
    let (code, _, stderr) = convert(&input, &out, &[]);
    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.starts_with(&format!("{}:4:32: missing \";\"", input.display())), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(!out.exists(), "nothing may be written");
    let missing = case.join("no-such.conf");
    let (code, _, stderr) = convert(&missing, &out, &[]);
    assert_eq!(code, 65, "{stderr}");
    assert!(stderr.starts_with(&format!("{}: cannot read: ", missing.display())), "{stderr}");
    assert!(!out.exists(), "nothing may be written");
    fs::remove_dir_all(out.parent().unwrap()).unwrap();
}

#[test]
fn a_listen_without_address_needs_vip_and_two_vips_of_one_family_are_refused() {
    let input = fixtures().join("corpus/mixed/nginx.conf");
    let out = scratch("vip");
    let run = |extra: &[&str]| {
        let args: Vec<&str> = ["--dry-run"].into_iter().chain(extra.iter().copied()).collect();
        convert(&input, &out, &args)
    };
    let (code, _, stderr) = run(&[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "listen 8443 has no address, and IPVS needs the VIP: give the IPv4 VIP with --vip ADDR"
        ),
        "{stderr}"
    );
    let (code, stdout, stderr) = run(&["--vip", "192.0.2.200"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.contains("vip: 192.0.2.200\n    port: 8443"), "{stdout}");
    let (code, _, stderr) = run(&["--vip", "192.0.2.200", "--vip", "192.0.2.201"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--vip: at most one IPv4 and one IPv6 address"), "{stderr}");
    fs::remove_dir_all(out).unwrap();
}
