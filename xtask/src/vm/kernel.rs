//! Debian's stock kernels, unpacked (not installed) into the cache: an uncompressed vmlinux that
//! qemu boots directly (PVH), and its modules with a modules.dep made by depmod.
//!
//! The VM tier runs on every kernel of [`KERNELS`]. Adding one is a line there: the metapackage
//! that depends on the current versioned image of that series; the initramfs, the VM harness and
//! the tier pick it up (docs/development.md).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::util::{checked, output};

/// The kernel series the VM tier runs on, each with the Debian metapackage (bookworm) that
/// depends on its current image; the first is the default of `cargo xtask vm`.
pub const KERNELS: &[Series] = &[
    Series { name: "6.1", metapackage: "linux-image-amd64" },
    Series { name: "6.12", metapackage: "linux-image-6.12-amd64" },
];

/// One kernel series: `6.1`, `6.12`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    pub name: &'static str,
    metapackage: &'static str,
}

impl Series {
    /// The series called `name` (`6.1`), or an error listing the known ones.
    pub fn named(name: &str) -> anyhow::Result<Self> {
        KERNELS.iter().copied().find(|series| series.name == name).with_context(|| {
            let known: Vec<&str> = KERNELS.iter().map(|series| series.name).collect();
            format!("no kernel {name:?}; the VM kernels are {}", known.join(", "))
        })
    }
}

impl Default for Series {
    fn default() -> Self {
        KERNELS[0]
    }
}

/// What the cache holds for one kernel release.
#[derive(Debug)]
pub struct Kernel {
    /// e.g. `6.1.0-57-amd64`.
    pub release: String,
    /// The package root: `lib/modules/<release>/...` below it.
    pub root: PathBuf,
    pub vmlinux: PathBuf,
}

pub fn cache_dir() -> PathBuf {
    crate::util::workspace_root().join("target/vm")
}

/// Makes sure the current kernel of `series` is unpacked in the cache and returns it.
pub fn ensure(series: Series) -> anyhow::Result<Kernel> {
    let package = image_package(series.metapackage)?;
    let release = package.strip_prefix("linux-image-").context("unexpected kernel package name")?.to_owned();
    let dir = cache_dir().join(format!("kernel-{release}"));
    let kernel = Kernel { root: dir.join("root"), vmlinux: dir.join("vmlinux"), release };
    if kernel.vmlinux.exists() {
        return Ok(kernel);
    }
    eprintln!("vm: fetching {package} (Debian's stock {} kernel) into {}", series.name, dir.display());
    let download = dir.join("download");
    fs::create_dir_all(&download)?;
    checked(Command::new("apt-get").args(["download", &package]).current_dir(&download))?;
    let deb = only_file(&download, ".deb")?;
    checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&kernel.root))?;
    // The package ships no modules.dep: depmod builds it so modprobe can order dependencies.
    checked(Command::new("depmod").arg("-b").arg(&kernel.root).arg(&kernel.release))?;
    let vmlinuz = kernel.root.join(format!("boot/vmlinuz-{}", kernel.release));
    extract_vmlinux(&vmlinuz, &kernel.vmlinux)?;
    fs::remove_dir_all(&download)?;
    Ok(kernel)
}

/// The versioned image package that `metapackage` depends on.
fn image_package(metapackage: &str) -> anyhow::Result<String> {
    let depends = match output(Command::new("apt-cache").args(["depends", metapackage])) {
        Ok(text) if text.contains("Depends:") => text,
        _ => {
            checked(Command::new("apt-get").args(["update", "-q"]))?;
            output(Command::new("apt-cache").args(["depends", metapackage]))?
        }
    };
    depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .find(|name| name.starts_with("linux-image-"))
        .map(str::to_owned)
        .with_context(|| format!("{metapackage} depends on no linux-image-* package"))
}

fn only_file(dir: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(suffix) {
            return Ok(path);
        }
    }
    bail!("no {suffix} file in {}", dir.display())
}

/// vmlinuz is a boot stub followed by the compressed ELF kernel (xz for 6.1, zstd for 6.12), at
/// the offset and length its setup header gives; qemu boots that ELF directly, which skips the
/// firmware and the in-guest decompression (several seconds on TCG).
fn extract_vmlinux(vmlinuz: &Path, vmlinux: &Path) -> anyhow::Result<()> {
    const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
    const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
    let image = fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    let payload = payload(&image).with_context(|| format!("{} has no x86 boot header", vmlinuz.display()))?;
    // The build appends the uncompressed size (4 bytes) to the compressed stream.
    let (program, args, compressed): (&str, &[&str], &[u8]) = if payload.starts_with(XZ_MAGIC) {
        ("xz", &["-dc", "--single-stream"], payload)
    } else if payload.starts_with(ZSTD_MAGIC) {
        ("zstd", &["-dc"], &payload[..payload.len().saturating_sub(4)])
    } else {
        bail!("{}: the kernel is neither xz nor zstd compressed", vmlinuz.display());
    };
    let partial = vmlinux.with_extension("partial");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&partial)?)
        .spawn()
        .with_context(|| format!("starting {program} (run `cargo xtask setup`)"))?;
    let mut stdin = child.stdin.take().context("decompressor stdin")?;
    let compressed = compressed.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &compressed));
    let status = child.wait()?;
    // xz stops reading after the first stream, so the writer may see a broken pipe: expected.
    let _ = writer.join();
    if !status.success() {
        bail!("{program} could not decompress the kernel in {}: {status}", vmlinuz.display());
    }
    fs::rename(&partial, vmlinux)?;
    Ok(())
}

/// The compressed kernel inside a bzImage: `payload_offset` (0x248) and `payload_length` (0x24c)
/// of the setup header, counted from the protected-mode code after `setup_sects` (0x1f1) sectors.
fn payload(image: &[u8]) -> Option<&[u8]> {
    let word = |at: usize| Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?) as usize);
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let setup_sectors = match *image.get(0x1f1)? {
        0 => 4,
        sectors => usize::from(sectors),
    };
    let start = (setup_sectors + 1) * 512 + word(0x248)?;
    image.get(start..start + word(0x24c)?)
}
