//! Installs what a fresh machine lacks. Every step checks first, so a second run costs seconds.

use std::process::Command;

use anyhow::Context as _;

use crate::util::{checked, output};

/// Debian packages: qemu and the guest userland (busybox, ip/tc, ipvsadm), module tools, the
/// kernel image extractor (xz, cpio), systemd-analyze to verify the unit file, and `prometheus`
/// for `promtool check metrics` in the host metrics test (about 20 MB to download; its JS
/// dependencies unpack to some 300 MB on disk), and dnsmasq, sipp (`sip-tester`) and chrony as the
/// real servers of the UDP health check tests (run in the tests' namespaces, never as services),
/// ethtool and wireguard-tools (`wg`) for the eBPF link-type tests (VLAN offloads, WireGuard),
/// keepalived, whose own `--config-test` checks the VRRP example in docs/ha.md (never started
/// on the host; `cargo xtask bench health` runs its checker in the VM, against LibraFlux's),
/// and nginx with its stream module plus openssl (a throwaway certificate), for the host test that
/// checks the `convert nginx` corpus with the real `nginx -t` in a namespace of its own: nginx
/// never runs as a service for the tests (see [`services_stopped`]); dpkg-dev
/// (dpkg-shlibdeps), binutils (strip) and lintian for `cargo xtask deb` and its host test; bird2
/// (BIRD 2: `bird`, `birdc`), which the VM's fleet test runs as the LB nodes' and the router's BGP
/// speaker in its namespaces (copied into the guest; never run as the host's service);
/// apache2-utils (htpasswd, the bcrypt hashes) and curl, the independent client of the metrics
/// endpoint's TLS test; zstd, which unpacks the 6.12 VM kernel; etcd-server (etcd 3.4), which the
/// `config push|diff` host test starts on loopback with a data directory of its own (never the
/// host's service); g++, which builds libFuzzer's runtime for the fuzz targets (`cargo xtask fuzz`).
const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "ipvsadm",
    "kmod",
    "iproute2",
    "xz-utils",
    "zstd",
    "cpio",
    "file",
    "systemd",
    "prometheus",
    "dnsmasq",
    "sip-tester",
    "chrony",
    "ethtool",
    "wireguard-tools",
    "keepalived",
    "nginx",
    "libnginx-mod-stream",
    "openssl",
    "nftables",
    "python3-jsonschema",
    "python3-yaml",
    "dpkg-dev",
    "binutils",
    "lintian",
    "apache2-utils",
    "curl",
    "bird2",
    "etcd-server",
    "g++",
];

/// The nightly that builds the eBPF crate (see docs/development.md for why this one).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";
/// bpf-linker 0.10.4 links with the nightly's own LLVM 22; newer releases want a system LLVM.
const BPF_LINKER_VERSION: &str = "0.10.4";

pub fn run() -> anyhow::Result<()> {
    apt_packages()?;
    services_stopped()?;
    ebpf_toolchain()?;
    bpf_linker()?;
    for series in crate::vm::kernel::KERNELS {
        crate::vm::kernel::ensure(*series)?;
    }
    eprintln!("setup: everything is in place");
    Ok(())
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|package| !apt_installed(package)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(" "));
    checked(Command::new("apt-get").args(["update", "-q"]))?;
    checked(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Debian's nginx package starts and enables nginx.service when systemd runs (it then serves
/// port 80 on every address). The tests need only the binary, for `nginx -t`, so the service is
/// stopped and disabled; without systemd (containers, the VM) there is nothing to stop. Checked
/// on every run, so a service that came back is stopped again.
/// Services that installing the packages above enables on a host with systemd, which the tests
/// never use: nginx (only `nginx -t` runs), BIRD (the tests start their own, in namespaces) and
/// etcd (the etcd test starts its own on loopback ports of its choosing).
const UNWANTED_SERVICES: &[&str] = &["nginx.service", "bird.service", "etcd.service"];

fn services_stopped() -> anyhow::Result<()> {
    if !std::path::Path::new("/run/systemd/system").exists() {
        return Ok(());
    }
    for service in UNWANTED_SERVICES {
        let enabled = output(Command::new("systemctl").args(["is-enabled", service])).unwrap_or_default();
        let active = output(Command::new("systemctl").args(["is-active", service])).unwrap_or_default();
        if enabled.trim() != "enabled" && active.trim() != "active" {
            continue;
        }
        eprintln!("setup: stopping and disabling {service} (the tests never use it)");
        checked(Command::new("systemctl").args(["disable", "--now", service]))?;
    }
    Ok(())
}

fn apt_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", package]))
        .is_ok_and(|status| status.trim() == "installed")
}

fn ebpf_toolchain() -> anyhow::Result<()> {
    let installed =
        output(Command::new("rustup").args(["run", EBPF_TOOLCHAIN, "rustc", "--print", "sysroot"]));
    let has_rust_src = installed.as_ref().is_ok_and(|sysroot| {
        std::path::Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library").exists()
    });
    if has_rust_src {
        return Ok(());
    }
    checked(Command::new("rustup").args([
        "toolchain",
        "install",
        EBPF_TOOLCHAIN,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    checked(Command::new("cargo").args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
    ]))
    .context("installing bpf-linker (needs the pinned nightly's LLVM)")
}
