//! `cargo xtask deb`: the Debian package of the `libraflux` binary, its unit, an example
//! configuration, man page, completions and docs. Assembled with `dpkg-deb` rather than
//! cargo-deb, so nothing beyond Debian's own dpkg-dev has to be installed from crates.io; the
//! reasons and the package's layout are in docs/install.md.

mod control;
mod copyright;
mod stage;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::util::{cargo, checked, output, workspace_root};

#[derive(Debug, clap::Args)]
pub struct DebArgs {
    /// Directory the .deb is written to (default: target/debian).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Which build of the binary goes in: `release` (what operators install), or `debug`, the
    /// build the test tiers already made, so that the host test checks the packaging without a
    /// release build of its own.
    #[arg(long, value_enum, default_value_t = Profile::Release)]
    profile: Profile,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    Release,
    Debug,
}

impl Profile {
    /// Where cargo puts this build's binaries, under target/.
    const fn dir(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Debug => "debug",
        }
    }
}

/// The package's name, and the name of everything it installs.
const PACKAGE: &str = "libraflux";

/// What the package is built from: the workspace's version, the commit, the build machine's
/// architecture.
#[derive(Debug)]
struct Build {
    version: String,
    arch: String,
    /// `git describe --always --dirty`: named in the package's changelog.
    commit: String,
    /// RFC 2822 date of the commit: the changelog's date.
    date: String,
    /// `2026` or `2025-2026`: the years of the first commit and this one, for the copyright notice.
    years: String,
    /// Seconds since the epoch of the commit: dpkg-deb's SOURCE_DATE_EPOCH, so that a rebuild of
    /// the same commit gives the same file dates.
    epoch: String,
}

/// Builds the release binary (a no-op when it is fresh), then the package; prints its path.
pub fn run(args: &DebArgs) -> anyhow::Result<()> {
    let mut build_binary = cargo();
    build_binary.args(["build", "--locked", "-p", PACKAGE]);
    if args.profile == Profile::Release {
        build_binary.arg("--release");
    }
    checked(&mut build_binary)?;
    let root = workspace_root();
    let out = args.out.clone().unwrap_or_else(|| root.join("target/debian"));
    let deb = build(&root, &out, args.profile)?;
    println!("{}", deb.display());
    Ok(())
}

fn build(root: &Path, out: &Path, profile: Profile) -> anyhow::Result<PathBuf> {
    let metadata = copyright::Metadata::read()?;
    let build = Build {
        version: metadata.version(PACKAGE)?,
        arch: output(Command::new("dpkg").arg("--print-architecture"))?.trim().to_owned(),
        commit: git(root, &["describe", "--always", "--dirty"])?,
        date: git(root, &["log", "-1", "--format=%cD"])?,
        years: years(root)?,
        epoch: git(root, &["log", "-1", "--format=%ct"])?,
    };
    // dpkg-shlibdeps wants the package's files under debian/PACKAGE beside a debian/control.
    let work = root.join("target/debian/work");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let tree = work.join("debian").join(PACKAGE);
    stage::dir(&tree)?;
    std::fs::write(work.join("debian/control"), "")?;

    stage::files(root, &tree, &build, &metadata, profile)?;
    control::write(root, &work, &tree, &build)?;

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let deb = out.join(format!("{PACKAGE}_{}_{}.deb", build.version, build.arch));
    checked(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&tree)
            .arg(&deb)
            .env("SOURCE_DATE_EPOCH", &build.epoch),
    )?;
    Ok(deb)
}

fn years(root: &Path) -> anyhow::Result<String> {
    let year = |args: &[&str]| git(root, &[&["log", "--format=%cd", "--date=format:%Y"], args].concat());
    // Newest first: the last root commit listed is the oldest.
    let roots = year(&["--max-parents=0"])?;
    let first = roots.lines().last().unwrap_or_default().to_owned();
    let last = year(&["-1"])?;
    Ok(if first == last { last } else { format!("{first}-{last}") })
}

fn git(root: &Path, args: &[&str]) -> anyhow::Result<String> {
    Ok(output(Command::new("git").arg("-C").arg(root).args(args))?.trim().to_owned())
}
