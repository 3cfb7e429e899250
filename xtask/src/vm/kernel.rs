//! Debian's stock kernel, unpacked (not installed) into the cache: an uncompressed vmlinux that
//! qemu boots directly (PVH), and its modules with a modules.dep made by depmod.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::util::{checked, output};

/// What the cache holds for one kernel release.
#[derive(Debug)]
pub struct Kernel {
    /// e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The package root: `lib/modules/<release>/...` below it.
    pub root: PathBuf,
    pub vmlinux: PathBuf,
}

pub fn cache_dir() -> PathBuf {
    crate::util::workspace_root().join("target/vm")
}

/// Makes sure the kernel of `linux-image-amd64` is unpacked in the cache and returns it.
pub fn ensure() -> anyhow::Result<Kernel> {
    let package = image_package()?;
    let release = package.strip_prefix("linux-image-").context("unexpected kernel package name")?.to_owned();
    let dir = cache_dir().join(format!("kernel-{release}"));
    let kernel = Kernel { root: dir.join("root"), vmlinux: dir.join("vmlinux"), release };
    if kernel.vmlinux.exists() {
        return Ok(kernel);
    }
    eprintln!("vm: fetching {package} (Debian's stock kernel) into {}", dir.display());
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

/// The versioned image package that the `linux-image-amd64` metapackage depends on.
fn image_package() -> anyhow::Result<String> {
    let depends = match output(Command::new("apt-cache").args(["depends", "linux-image-amd64"])) {
        Ok(text) if text.contains("Depends:") => text,
        _ => {
            checked(Command::new("apt-get").args(["update", "-q"]))?;
            output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?
        }
    };
    depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .find(|name| name.starts_with("linux-image-"))
        .map(str::to_owned)
        .context("linux-image-amd64 depends on no linux-image-* package")
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

/// vmlinuz is a boot stub followed by an xz stream of the ELF kernel; qemu boots that ELF
/// directly, which skips the firmware and the in-guest decompression (several seconds on TCG).
fn extract_vmlinux(vmlinuz: &Path, vmlinux: &Path) -> anyhow::Result<()> {
    const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
    let image = fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    let start = image
        .windows(XZ_MAGIC.len())
        .position(|window| window == XZ_MAGIC)
        .with_context(|| format!("{} holds no xz stream", vmlinuz.display()))?;
    let partial = vmlinux.with_extension("partial");
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&partial)?)
        .spawn()
        .context("starting xz")?;
    let mut stdin = child.stdin.take().context("xz stdin")?;
    let compressed = image[start..].to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &compressed));
    let status = child.wait()?;
    // xz stops reading after the first stream, so the writer may see a broken pipe: expected.
    let _ = writer.join();
    if !status.success() {
        bail!("xz could not decompress the kernel in {}: {status}", vmlinuz.display());
    }
    fs::rename(&partial, vmlinux)?;
    Ok(())
}
