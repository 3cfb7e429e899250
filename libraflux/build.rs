//! Builds the eBPF object (`libraflux-ebpf`) with the pinned nightly and `bpf-linker`, so that
//! plain stable `cargo build` produces a `libraflux` binary with its programs embedded.
//! `cargo xtask setup` installs the toolchain and linker this needs.

/// The nightly known to build aya programs with bpf-linker 0.10.4 (see docs/development.md).
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    // Fuzz builds (`--cfg fuzzing`, set by `cargo xtask fuzz` and cargo-fuzz) drive parsers only
    // and never load the programs: an empty object spares them the eBPF build (about a minute
    // of the CI's fuzz step). Loading it fails, so such a binary cannot pass for a real one.
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        std::fs::write(out_dir.join("libraflux"), [])?;
        return Ok(());
    }
    let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../libraflux-ebpf");
    let package = aya_build::Package { name: "libraflux-ebpf", root_dir: ebpf_dir, ..Default::default() };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN))
}
