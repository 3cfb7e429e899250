//! DEBIAN/: the control file (with `Depends` computed by dpkg-shlibdeps from the binary's
//! dynamic symbols), the conffiles (everything under /etc), md5sums and the maintainer scripts.

use std::{fs, os::unix::fs::MetadataExt as _, path::Path, process::Command};

use anyhow::{Context as _, bail};

use super::{Build, PACKAGE};
use crate::util::output;

pub(super) const MAINTAINER: &str = "LibraFlux maintainers <libraflux@example.invalid>";

/// The maintainer scripts, from libraflux/deb/ (what each does is said at its top).
const SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

const DESCRIPTION: &str = "\
safe, planned management of the Linux IPVS load balancer
 LibraFlux manages the Linux kernel's IPVS load balancer on L4 load-balancer
 nodes. Services (a VIP, a scheduler, weighted backends, a health check) are
 described in YAML; `libraflux apply` shows a plan of exactly what will change,
 refuses dangerous changes and programs IPVS over generic netlink.
 .
 The daemon, a systemd service this package installs but does not enable,
 keeps the node converged, health-checks backends (TCP, HTTP, DNS, SIP, NTP),
 drains them without cutting live traffic, snapshots and rolls back, and
 exports Prometheus metrics; eBPF programs count traffic per VIP and backend.";

pub(super) fn write(root: &Path, work: &Path, tree: &Path, build: &Build) -> anyhow::Result<()> {
    let files = package_files(tree)?;
    let conffiles: Vec<&String> = files.iter().filter(|path| path.starts_with("etc/")).collect();
    let depends = shlibs_depends(work)?;
    let installed_size = installed_size(tree)?;
    let md5sums = output(Command::new("md5sum").current_dir(tree).arg("--").args(&files))?;

    let debian = tree.join("DEBIAN");
    super::stage::dir(&debian)?;
    let control = format!(
        "Package: {PACKAGE}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: {MAINTAINER}\n\
         Installed-Size: {installed_size}\nDepends: {depends}\nSection: net\nPriority: optional\n\
         Description: {DESCRIPTION}\n",
        version = build.version,
        arch = build.arch,
    );
    super::stage::write(&debian.join("control"), control.as_bytes(), 0o644)?;
    let conffiles: String = conffiles.iter().map(|path| format!("/{path}\n")).collect();
    super::stage::write(&debian.join("conffiles"), conffiles.as_bytes(), 0o644)?;
    super::stage::write(&debian.join("md5sums"), md5sums.as_bytes(), 0o644)?;
    for script in SCRIPTS {
        super::stage::copy(&root.join("libraflux/deb").join(script), &debian.join(script), 0o755)?;
    }
    Ok(())
}

/// `shlibs:Depends` of the binary, e.g. `libc6 (>= 2.34), libgcc-s1 (>= 4.2)`.
fn shlibs_depends(work: &Path) -> anyhow::Result<String> {
    let binary = format!("debian/{PACKAGE}/usr/bin/libraflux");
    let said = output(Command::new("dpkg-shlibdeps").current_dir(work).args(["-O", &binary]))?;
    let Some(depends) = said.lines().find_map(|line| line.strip_prefix("shlibs:Depends=")) else {
        bail!("dpkg-shlibdeps found no shared library dependency of {binary}: {said:?}");
    };
    Ok(depends.to_owned())
}

/// Every regular file and symlink of the tree, relative to it, sorted (DEBIAN/ not yet there).
fn package_files(tree: &Path) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    walk(tree, &mut |path, metadata| {
        if !metadata.is_dir() {
            files.push(path.strip_prefix(tree).expect("inside the tree").to_string_lossy().into_owned());
        }
    })?;
    files.sort();
    Ok(files)
}

/// In KiB, as dpkg-gencontrol counts it: each file rounded up to a KiB, and a KiB for each
/// directory or link.
fn installed_size(tree: &Path) -> anyhow::Result<u64> {
    let mut kib = 0;
    walk(tree, &mut |_, metadata| {
        kib += if metadata.is_file() { metadata.size().div_ceil(1024) } else { 1 };
    })?;
    Ok(kib)
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &fs::Metadata)) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let metadata = fs::symlink_metadata(&path)?;
        visit(&path, &metadata);
        if metadata.is_dir() {
            walk(&path, visit)?;
        }
    }
    Ok(())
}
