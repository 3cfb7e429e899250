//! The Debian package `cargo xtask deb` builds (docs/install.md): what it holds and with which
//! modes, its control fields, lintian without an error or warning (overrides only as justified
//! in libraflux/deb/lintian-overrides), and dpkg installing it into a throwaway root, where the
//! installed binary accepts the installed configuration and dpkg treats it as a conffile.
//!
//! The package is built once for the whole file, from the debug build the test tiers already
//! made (`cargo xtask deb --profile debug`): the same files and the same packaging as the release
//! package operators install, without a release build in every test run.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use libraflux_tests::{Ran, run};

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The .deb, built on first use into target/debian/host-test/.
fn deb() -> &'static str {
    static DEB: OnceLock<String> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = PathBuf::from(WORKSPACE).join("target/debian/host-test");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let built = run_in(
            Command::new(cargo)
                .current_dir(WORKSPACE)
                .args([
                    "run",
                    "--quiet",
                    "--locked",
                    "-p",
                    "xtask",
                    "--",
                    "deb",
                    "--profile",
                    "debug",
                    "--out",
                ])
                .arg(&out),
        );
        built.assert_code(0);
        let path = built.stdout.lines().last().expect("cargo xtask deb prints the package's path").to_owned();
        assert!(path.starts_with(&*out.to_string_lossy()), "the package is not in {}: {path}", out.display());
        path
    })
}

/// A fresh directory for this test run (removed first if an earlier run of this pid left it).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("libraflux-deb-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_in(command: &mut Command) -> Ran {
    Ran::from(
        command.output().unwrap_or_else(|err| panic!("cannot run {command:?} (is it installed?): {err}")),
    )
}

/// Each entry of `dpkg-deb -c` as (path without the leading `.`, mode string, owner).
fn contents() -> Vec<(String, String, String)> {
    run("dpkg-deb", &["-c", deb()])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 6, "unexpected dpkg-deb -c line: {line}");
            let path = fields[5].trim_start_matches('.').trim_end_matches('/');
            (if path.is_empty() { "/" } else { path }.to_owned(), fields[0].to_owned(), fields[1].to_owned())
        })
        .collect()
}

#[test]
fn the_package_holds_the_binary_unit_config_man_page_completions_and_docs() {
    let contents = contents();
    let expected = [
        ("/usr/bin/libraflux", "-rwxr-xr-x"),
        ("/lib/systemd/system/libraflux.service", "-rw-r--r--"),
        ("/etc/libraflux/config.yaml", "-rw-r--r--"),
        ("/etc/libraflux/config.d", "drwxr-xr-x"),
        ("/usr/share/man/man8/libraflux.8.gz", "-rw-r--r--"),
        ("/usr/share/bash-completion/completions/libraflux", "-rw-r--r--"),
        ("/usr/share/zsh/vendor-completions/_libraflux", "-rw-r--r--"),
        ("/usr/share/fish/vendor_completions.d/libraflux.fish", "-rw-r--r--"),
        ("/usr/share/doc/libraflux/copyright", "-rw-r--r--"),
        ("/usr/share/doc/libraflux/changelog.gz", "-rw-r--r--"),
        ("/usr/share/doc/libraflux/README.md", "-rw-r--r--"),
        ("/usr/share/doc/libraflux/libraflux.schema.json", "-rw-r--r--"),
        ("/usr/share/doc/libraflux/install.md", "-rw-r--r--"),
        ("/usr/share/doc/libraflux/configuration.md", "-rw-r--r--"),
        ("/usr/share/doc/libraflux/examples/config.yaml", "-rw-r--r--"),
    ];
    for (path, mode) in expected {
        let found = contents.iter().find(|(found, _, _)| found == path);
        let listing: Vec<&str> = contents.iter().map(|(path, _, _)| path.as_str()).collect();
        let (_, found_mode, _) =
            found.unwrap_or_else(|| panic!("{path} is not in the package: {listing:#?}"));
        assert_eq!(found_mode, mode, "mode of {path}");
    }
    for (path, _, owner) in &contents {
        assert_eq!(owner, "root/root", "owner of {path}");
        // systemd makes the state and runtime directories (StateDirectory=, RuntimeDirectory=
        // with DynamicUser=); a package-made one would be root's, and in systemd's way.
        assert!(!path.starts_with("/var") && !path.starts_with("/run"), "{path} must not be packaged");
    }
}

#[test]
fn the_control_fields_come_from_the_build_and_the_binary() {
    let field = |name: &str| run("dpkg-deb", &["-f", deb(), name]).trim().to_owned();
    assert_eq!(field("Package"), "libraflux");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("Architecture"), run("dpkg", &["--print-architecture"]).trim());
    assert_eq!(field("Section"), "net");
    assert_eq!(field("Priority"), "optional");
    assert!(field("Maintainer").contains('@'), "Maintainer: {}", field("Maintainer"));
    // dpkg-shlibdeps' answer for a Rust binary linked against glibc.
    let depends = field("Depends");
    assert!(depends.starts_with("libc6 (>= 2."), "Depends: {depends}");
    assert!(depends.contains("libgcc-s1"), "Depends: {depends}");
    let size: u64 = field("Installed-Size").parse().expect("Installed-Size is a number of KiB");
    assert!(size > 1024, "Installed-Size {size} KiB is less than the binary alone");
    assert_eq!(run("dpkg-deb", &["-I", deb(), "conffiles"]), "/etc/libraflux/config.yaml\n");
    // The scripts host_deb_scripts.rs runs are the ones shipped.
    for script in ["postinst", "prerm", "postrm"] {
        let source = std::fs::read_to_string(format!("{WORKSPACE}/libraflux/deb/{script}")).unwrap();
        assert_eq!(run("dpkg-deb", &["-I", deb(), script]), source, "the packaged {script} differs");
    }
}

#[test]
fn lintian_reports_no_error_and_no_warning() {
    // Not with --show-overrides: lintian then fails on the overridden tags too.
    let ran = run_in(Command::new("lintian").args(["--fail-on", "error,warning", deb()]));
    let said = format!("{}{}", ran.stdout, ran.stderr);
    let complaints: Vec<&str> =
        said.lines().filter(|line| line.starts_with("E: ") || line.starts_with("W: ")).collect();
    assert!(complaints.is_empty() && ran.code == 0, "lintian (exit {}):\n{said}", ran.code);
}

/// An installation into `root` with dpkg's own database there. The maintainer scripts run
/// outside the root (nothing to chroot into) with DPKG_ROOT set, which they honour by leaving
/// the machine's systemd alone; dependencies are the machine's, not the empty root's.
fn dpkg(root: &Path, args: &[&str]) {
    let root = format!("--root={}", root.display());
    let mut all = vec![
        root.as_str(),
        "--force-not-root",
        "--force-script-chrootless",
        "--force-depends",
        "--log=/dev/null",
    ];
    all.extend_from_slice(args);
    run("dpkg", &all);
}

fn throwaway_root() -> PathBuf {
    let root = scratch("root");
    let admin = root.join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(dir)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    root
}

/// `libraflux validate -c CONFIG` with the binary dpkg installed into `root`.
fn validate(root: &Path, config: &Path) -> Ran {
    run_in(Command::new(root.join("usr/bin/libraflux")).arg("validate").arg("-c").arg(config))
}

/// The installed config.yaml with its commented-out service switched on, as its comment says.
fn with_the_example_service(config: &str) -> String {
    let (head, tail) = config.split_once("services: []\n").expect("config.yaml has `services: []`");
    let uncommented: Vec<&str> =
        tail.lines().map(|line| line.strip_prefix("# ").unwrap_or(line.trim_start_matches('#'))).collect();
    format!("{head}{}\n", uncommented.join("\n"))
}

#[test]
fn installed_into_a_throwaway_root_the_binary_validates_the_installed_config() {
    let root = throwaway_root();
    // What postinst records for systemd on a real install (deb-systemd-helper update-state).
    let host_state = Path::new("/var/lib/systemd/deb-systemd-helper-enabled/libraflux.service.dsh-also");
    let host_state_before = host_state.exists();
    dpkg(&root, &["--install", deb()]);
    assert_eq!(
        host_state.exists(),
        host_state_before,
        "installing into a root touched this machine's systemd state"
    );
    let config = root.join("etc/libraflux/config.yaml");
    assert!(root.join("etc/libraflux/config.d").is_dir());
    assert!(!root.join("var/lib/libraflux").exists(), "the package made the state directory");

    // The unit the tests check (host_systemd.rs, vm/unit.rs) is the one installed.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/libraflux.service")).unwrap();
    assert_eq!(unit, include_str!("../../libraflux/systemd/libraflux.service"), "the installed unit differs");
    let completion = root.join("usr/share/bash-completion/completions/libraflux");
    let registered =
        run("bash", &["-c", &format!("source '{}' && complete -p libraflux", completion.display())]);
    assert!(registered.contains("libraflux"), "bash completion registers nothing: {registered}");

    let version = run(&root.join("usr/bin/libraflux").to_string_lossy(), &["--version"]);
    assert_eq!(version.trim(), concat!("libraflux ", env!("CARGO_PKG_VERSION")));
    validate(&root, &config).assert_code(0);
    validate(&root, &root.join("usr/share/doc/libraflux/examples/config.yaml")).assert_code(0);

    // The service the conffile offers in comments is valid once uncommented, and validate
    // really reads the file: a broken copy is refused.
    let text = std::fs::read_to_string(&config).unwrap();
    let variants = scratch("variants");
    let with_service = variants.join("with-service.yaml");
    std::fs::write(&with_service, with_the_example_service(&text)).unwrap();
    let ran = validate(&root, &with_service);
    ran.assert_code(0);
    assert!(ran.stdout.contains("1 service"), "the uncommented service was not read:\n{}", ran.stdout);
    let broken = variants.join("broken.yaml");
    std::fs::write(&broken, text.replace("listen: 127.0.0.1:9469", "listen: nowhere")).unwrap();
    validate(&root, &broken).assert_code(65);

    // A conffile: an edit survives reinstalling (an upgrade to an unchanged file), and removal;
    // purge deletes it.
    let edited = format!("{text}# edited by the operator\n");
    std::fs::write(&config, &edited).unwrap();
    dpkg(&root, &["--force-confold", "--install", deb()]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited, "reinstalling replaced an edited conffile");
    dpkg(&root, &["--remove", "libraflux"]);
    assert!(!root.join("usr/bin/libraflux").exists(), "remove left the binary");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited, "remove touched the conffile");
    dpkg(&root, &["--purge", "libraflux"]);
    assert!(!config.exists(), "purge left the conffile");

    std::fs::remove_dir_all(&root).unwrap();
    std::fs::remove_dir_all(&variants).unwrap();
}
