//! `cargo xtask fuzz [TARGET] [--seconds N | --runs N]`: builds the libFuzzer targets of `fuzz/`
//! and runs them, one after the other, each from its seed corpus.
//!
//! Built here rather than by cargo-fuzz, which would have to be compiled on every fresh machine
//! first: the pinned nightly that `setup` installs for the eBPF programs builds the targets with
//! the flags cargo-fuzz passes (sanitizer coverage, `--cfg fuzzing`, debug assertions and
//! overflow checks) and no sanitizer, since the parsers are safe Rust. The layout stays
//! cargo-fuzz's (`fuzz/corpus/TARGET`, `fuzz/artifacts/TARGET`), so `cargo fuzz run` works too.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    setup::EBPF_TOOLCHAIN,
    util::{checked, output, workspace_root},
};

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// The target to run; all of them, one after the other, when none is named.
    target: Option<String>,
    /// How long each target runs, in seconds.
    #[arg(long, default_value_t = 60, conflicts_with = "runs")]
    seconds: u64,
    /// Run each target for this many executions instead of a time.
    #[arg(long)]
    runs: Option<u64>,
    /// Build with the `quick` profile, as the CI does: less optimised, built sooner, runs slower.
    #[arg(long)]
    quick: bool,
}

/// Which cargo profile of `fuzz/Cargo.toml` builds the targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// `release`: for long runs.
    Release,
    /// `quick`: for the CI's short runs, where the build dominates.
    Quick,
}

impl Profile {
    const fn name(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Quick => "quick",
        }
    }
}

/// A target and where its seeds come from: files under a directory of the repository whose
/// names end as given. Every target also takes whatever `fuzz/seeds/TARGET/` holds.
struct Target {
    name: &'static str,
    seeds: &'static [(&'static str, &'static str)],
}

const TARGETS: &[Target] = &[
    Target { name: "ipvs_decode", seeds: &[("libraflux/src/ipvs/packet/fixtures", ".bin")] },
    Target { name: "nginx_convert", seeds: &[("libraflux/tests/fixtures/nginx", ".conf")] },
    Target {
        name: "config_validate",
        seeds: &[("libraflux/tests/fixtures/config", ".yaml"), ("docs/examples", ".yaml")],
    },
    Target { name: "health_dns", seeds: &[] },
    Target { name: "health_sip", seeds: &[] },
    Target { name: "health_ntp", seeds: &[] },
    Target { name: "health_http", seeds: &[] },
    Target { name: "metrics_http", seeds: &[] },
    Target { name: "control_request", seeds: &[] },
    Target { name: "bundle_decode", seeds: &[] },
    Target { name: "replication_wire", seeds: &[] },
    Target { name: "snapshot_json", seeds: &[] },
];

/// The flags cargo-fuzz builds with, less its sanitizer: inline 8-bit counters and comparison
/// tracing for libFuzzer, the `fuzzing` cfg, and the checks of a debug build.
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg=fuzzing",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

/// An input that takes longer than this is reported as a hang.
const TIMEOUT_SECONDS: u64 = 10;

/// How long the CI runs each target: enough to run every seed and mutate them for a while.
pub const CI_SECONDS: u64 = 5;

/// How a run is bounded.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    Seconds(u64),
    Runs(u64),
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    let targets: Vec<&Target> = match &args.target {
        None => TARGETS.iter().collect(),
        Some(name) => match TARGETS.iter().find(|target| target.name == name) {
            Some(target) => vec![target],
            None => {
                let names: Vec<&str> = TARGETS.iter().map(|target| target.name).collect();
                bail!("no fuzz target {name:?}; the targets are {}", names.join(", "))
            }
        },
    };
    let budget = args.runs.map_or(Budget::Seconds(args.seconds), Budget::Runs);
    fuzz(&targets, budget, if args.quick { Profile::Quick } else { Profile::Release })
}

/// What the CI runs, `cargo xtask fuzz --quick --seconds 5`: every target for [`CI_SECONDS`],
/// so that a panic on a seed (or one found within seconds of it) fails the build.
pub fn ci() -> anyhow::Result<()> {
    fuzz(&TARGETS.iter().collect::<Vec<_>>(), Budget::Seconds(CI_SECONDS), Profile::Quick)
}

fn fuzz(targets: &[&Target], budget: Budget, profile: Profile) -> anyhow::Result<()> {
    let started = Instant::now();
    let binaries = build(targets, profile)?;
    eprintln!("fuzz: built in {:.0?}", started.elapsed());
    for (target, binary) in targets.iter().zip(binaries) {
        let started = Instant::now();
        run_target(target, &binary, budget)?;
        eprintln!("fuzz: {} passed in {:.0?}", target.name, started.elapsed());
    }
    eprintln!("fuzz: {} targets passed in {:.0?} with the build", targets.len(), started.elapsed());
    Ok(())
}

/// Builds the targets with the pinned nightly and returns their binaries, in order.
fn build(targets: &[&Target], profile: Profile) -> anyhow::Result<Vec<PathBuf>> {
    let fuzz_dir = workspace_root().join("fuzz");
    let host = host_triple()?;
    let mut command = Command::new("rustup");
    command
        .args(["run", EBPF_TOOLCHAIN, "cargo", "build", "--profile", profile.name(), "--target", &host])
        .arg("--manifest-path")
        .arg(fuzz_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", fuzz_dir.join("target"))
        .env("RUSTFLAGS", RUSTFLAGS.join(" "))
        // What cargo set for xtask itself would point the nightly at the stable toolchain.
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for target in targets {
        command.args(["--bin", target.name]);
    }
    checked(&mut command).context("building the fuzz targets")?;
    let dir = fuzz_dir.join("target").join(&host).join(profile.name());
    Ok(targets.iter().map(|target| dir.join(target.name)).collect())
}

/// The triple the nightly builds for by default (cargo-fuzz names it explicitly too, so that
/// build scripts and proc macros are built without the coverage flags).
fn host_triple() -> anyhow::Result<String> {
    let version = output(Command::new("rustup").args(["run", EBPF_TOOLCHAIN, "rustc", "-vV"]))?;
    version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("`rustc -vV` names no host")
}

/// Runs one target from its corpus and seeds; fails on a crash, a hang or a leak of memory.
fn run_target(target: &Target, binary: &Path, budget: Budget) -> anyhow::Result<()> {
    let fuzz_dir = workspace_root().join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(target.name);
    let artifacts = fuzz_dir.join("artifacts").join(target.name);
    let seeds = stage_seeds(target)?;
    for dir in [&corpus, &artifacts] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bound = match budget {
        Budget::Seconds(seconds) => format!("-max_total_time={seconds}"),
        Budget::Runs(runs) => format!("-runs={runs}"),
    };
    let mut command = Command::new(binary);
    command
        .arg(&corpus)
        .arg(&seeds)
        .arg(bound)
        .arg(format!("-timeout={TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    eprintln!("==> fuzz {}", target.name);
    checked(&mut command).with_context(|| {
        format!(
            "fuzz target {} failed: the input is in {} (rerun it with {} FILE)",
            target.name,
            artifacts.display(),
            binary.display(),
        )
    })
}

/// Copies the target's seeds into one flat directory, `fuzz/target/seeds/TARGET`, each named
/// after its path in the repository; returns it.
fn stage_seeds(target: &Target) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let staged = root.join("fuzz/target/seeds").join(target.name);
    if staged.exists() {
        fs::remove_dir_all(&staged).with_context(|| format!("clearing {}", staged.display()))?;
    }
    fs::create_dir_all(&staged).with_context(|| format!("creating {}", staged.display()))?;
    let own = format!("fuzz/seeds/{}", target.name);
    let mut count = 0;
    for (dir, suffix) in target.seeds.iter().copied().chain([(own.as_str(), "")]) {
        for file in files_under(&root.join(dir))? {
            let relative = file.strip_prefix(&root).expect("under the workspace");
            let name = relative.to_string_lossy();
            if !name.ends_with(suffix) || name.ends_with("README.md") {
                continue;
            }
            fs::copy(&file, staged.join(name.replace('/', "_")))
                .with_context(|| format!("copying {}", file.display()))?;
            count += 1;
        }
    }
    if count == 0 {
        bail!("fuzz target {} has no seeds", target.name);
    }
    Ok(staged)
}

/// Every file below `dir` (none when it does not exist).
fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return Ok(files) };
    for entry in entries {
        let path = entry.with_context(|| format!("listing {}", dir.display()))?.path();
        if path.is_dir() {
            files.extend(files_under(&path)?);
        } else {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
