//! The package's file tree: the stripped binary, what the binary generates about itself (man
//! page, completions), the unit, the conffile and the docs, each with the mode Debian expects.
//!
//! Not in the tree: /var/lib/libraflux. The unit has `DynamicUser=yes` and
//! `StateDirectory=libraflux`, so systemd creates it at the first start, as
//! /var/lib/private/libraflux owned by the dynamic user behind a /var/lib/libraflux link. A
//! directory the package made would be a root-owned one that systemd then moves aside, under
//! dpkg's feet (docs/install.md).

use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::{Build, PACKAGE, copyright::Metadata};
use crate::util::{checked, describe, output};

/// Where Debian's shells look for completions of a command: (shell, file).
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "usr/share/bash-completion/completions/libraflux"),
    ("zsh", "usr/share/zsh/vendor-completions/_libraflux"),
    ("fish", "usr/share/fish/vendor_completions.d/libraflux.fish"),
];

pub(super) fn files(
    root: &Path,
    tree: &Path,
    build: &Build,
    metadata: &Metadata,
    profile: super::Profile,
) -> anyhow::Result<()> {
    let binary = tree.join("usr/bin/libraflux");
    copy(&root.join("target").join(profile.dir()).join("libraflux"), &binary, 0o755)?;
    // What dh_strip does: debug symbols out, the code (and the embedded eBPF object) untouched.
    checked(
        Command::new("strip")
            .args(["--strip-unneeded", "--remove-section=.comment", "--remove-section=.note"])
            .arg(&binary),
    )?;

    let manpage = output(Command::new(&binary).arg("manpage"))?;
    write(&tree.join("usr/share/man/man8/libraflux.8.gz"), &gzip(manpage.as_bytes())?, 0o644)?;
    for (shell, path) in COMPLETIONS {
        let script = output(Command::new(&binary).args(["completions", shell]))?;
        write(&tree.join(path), script.as_bytes(), 0o644)?;
    }

    // /lib, not /usr/lib: where Debian 12 packages put their units (Debian 13 moved them).
    copy(
        &root.join("libraflux/systemd/libraflux.service"),
        &tree.join("lib/systemd/system/libraflux.service"),
        0o644,
    )?;
    copy(&root.join("libraflux/deb/config.yaml"), &tree.join("etc/libraflux/config.yaml"), 0o644)?;
    dir(&tree.join("etc/libraflux/config.d"))?;

    let doc = tree.join("usr/share/doc").join(PACKAGE);
    copy(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    for page in files_in(&root.join("docs"), "md")? {
        copy(&page, &doc.join(page.file_name().expect("a file")), 0o644)?;
    }
    // The examples' yaml-language-server modelines name it as ../libraflux.schema.json.
    copy(&root.join("docs/libraflux.schema.json"), &doc.join("libraflux.schema.json"), 0o644)?;
    for example in files_in(&root.join("docs/examples"), "")? {
        copy(&example, &doc.join("examples").join(example.file_name().expect("a file")), 0o644)?;
    }
    write(&doc.join("copyright"), metadata.copyright(PACKAGE, &build.years)?.as_bytes(), 0o644)?;
    write(&doc.join("changelog.gz"), &gzip(changelog(build).as_bytes())?, 0o644)?;
    copy(
        &root.join("libraflux/deb/lintian-overrides"),
        &tree.join("usr/share/lintian/overrides").join(PACKAGE),
        0o644,
    )?;
    Ok(())
}

/// A native package's changelog, in Debian's format: one entry naming the commit.
fn changelog(build: &Build) -> String {
    format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\n  * Built by `cargo xtask deb` from commit \
         {commit}.\n\n -- {maintainer}  {date}\n",
        version = build.version,
        commit = build.commit,
        maintainer = super::control::MAINTAINER,
        date = build.date,
    )
}

/// The regular files of `dir` whose names end in `.EXT` (any, when `ext` is empty), sorted.
fn files_in(dir: &Path, ext: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let wanted = ext.is_empty() || path.extension().is_some_and(|found| found == ext);
        if path.is_file() && wanted {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

pub(super) fn copy(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &bytes, mode)
}

pub(super) fn write(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    dir(path.parent().expect("a path inside the tree"))?;
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Creates `path` and its parents with mode 0755, whatever the umask.
pub(super) fn dir(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        dir(parent)?;
    }
    fs::create_dir(path).with_context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// `gzip -9n`: the best compression, and no name or date inside, as Debian wants.
fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut command = Command::new("gzip");
    command.args(["-9n", "--stdout"]).stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = command.spawn().with_context(|| format!("cannot start {}", describe(&command)))?;
    child.stdin.take().expect("piped").write_all(bytes)?;
    let result = child.wait_with_output()?;
    if !result.status.success() {
        bail!("{} failed: {}", describe(&command), result.status);
    }
    Ok(result.stdout)
}
