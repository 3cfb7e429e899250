//! Builds the eBPF object (`libraflux-ebpf`) with the pinned nightly and `bpf-linker`, so that
//! plain stable `cargo build` produces a `libraflux` binary with its programs embedded.
//! `cargo xtask setup` installs the toolchain and linker this needs.

/// The nightly known to build aya programs with bpf-linker 0.10.4 (see docs/development.md).
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../libraflux-ebpf");
    let package = aya_build::Package { name: "libraflux-ebpf", root_dir: ebpf_dir, ..Default::default() };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN))
}
