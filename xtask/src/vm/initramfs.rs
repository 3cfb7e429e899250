//! The guest's initramfs: static busybox, the host's bash, ip, tc, ss and ipvsadm with the glibc
//! libraries they (and host-built test binaries) need, the kernel modules in load order, and an
//! init that mounts the workspace over 9p and runs the job given on the kernel command line.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::kernel::{Kernel, cache_dir};
use crate::util::{checked, output};

/// Modules the guest loads at boot. Dependencies are resolved by modprobe from modules.dep.
const MODULES: &[&str] = &[
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_wlc",
    "ip_vs_lblc",
    "ip_vs_lblcr",
    "ip_vs_dh",
    "ip_vs_sh",
    "ip_vs_sed",
    "ip_vs_nq",
    "ip_vs_fo",
    "ip_vs_ovf",
    "ip_vs_mh",
    "nf_conntrack",
    "veth",
    "dummy",
    "ipip",
    "ip6_tunnel",
    // The eBPF link-type tests: VLAN devices (802.1Q, 802.1ad), a bridge, tun and WireGuard.
    "8021q",
    "bridge",
    "tun",
    "wireguard",
    "sch_ingress",
    "cls_bpf",
    "act_bpf",
    // The eBPF connection-outcome tests drop and reject connection attempts with nftables.
    "nf_tables",
    "nft_reject_inet",
];

/// Host programs copied into the guest at their own paths, with their libraries.
const PROGRAMS: &[&str] = &[
    "/usr/bin/bash",
    "/bin/ip",
    "/usr/sbin/tc",
    "/usr/bin/ss",
    "/usr/sbin/ipvsadm",
    "/usr/sbin/ipvsadm-save",
    "/usr/sbin/ipvsadm-restore",
    // The metrics tests lint /metrics with promtool inside the VM too.
    "/usr/bin/promtool",
    // ipvsadm-restore and other scripts need grep.
    "/usr/bin/grep",
    // The eBPF link-type tests turn VLAN offloads off and configure WireGuard.
    "/usr/sbin/ethtool",
    "/usr/bin/wg",
    "/usr/sbin/nft",
    // The metrics endpoint's TLS test: certificates, a bcrypt hash and a TLS client.
    "/usr/bin/openssl",
    "/usr/bin/htpasswd",
    // The fleet test's BGP speakers (BIRD 2) and their client.
    "/usr/sbin/bird",
    "/usr/sbin/birdc",
    // The etcd fleet test's store (Debian's etcd-server); the test speaks to it with libraflux.
    "/usr/bin/etcd",
    // The health benchmark compares keepalived's TCP_CHECK, which needs IPVS, with ours.
    "/usr/sbin/keepalived",
];

/// Libraries host-built Rust test binaries load beyond those of the programs above.
const EXTRA_LIBRARIES: &[&str] = &["/lib/x86_64-linux-gnu/libgcc_s.so.1"];

/// Bump when the layout below changes, so cached images are rebuilt.
const LAYOUT_VERSION: u32 = 6;

const INIT: &str = r#"#!/busybox/bin/busybox sh
# LibraFlux test VM init: mount, load modules, mount the host share, run the job, power off.
/busybox/bin/busybox --install -s /busybox/bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/busybox/bin
mkdir -p /proc /sys /dev /tmp /run /var/run /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t bpf bpf /sys/fs/bpf
while read -r module args; do
    insmod "/lib/modules/libraflux/$module" $args || echo "libraflux-vm: insmod $module failed" > /dev/ttyS0
done < /etc/libraflux-vm/modules
share=$(sed -n 's/.*libraflux\.share=\([^ ]*\).*/\1/p' /proc/cmdline)
job=$(sed -n 's/.*libraflux\.job=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p "$share"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 hostshare "$share" || echo "libraflux-vm: 9p mount failed" > /dev/ttyS0
ip link set lo up
cd "$share"
HOME=/root /usr/bin/bash "$job" > /dev/ttyS1 2>&1 < /dev/null
echo "LIBRAFLUX_VM_EXIT=$?" > /dev/ttyS0
sync
reboot -f
"#;

/// Builds the image for `kernel` unless a current one is cached; returns its path.
pub fn ensure(kernel: &Kernel) -> anyhow::Result<PathBuf> {
    let image = cache_dir().join(format!("initramfs-{}.cpio", kernel.release));
    let stamp = image.with_extension("stamp");
    let wanted = format!("layout {LAYOUT_VERSION}\nmodules {MODULES:?}\nprograms {PROGRAMS:?}\n");
    if image.exists() && fs::read_to_string(&stamp).is_ok_and(|have| have == wanted) {
        return Ok(image);
    }
    eprintln!("vm: building the initramfs for {}", kernel.release);
    let staging = cache_dir().join(format!("initramfs-{}", kernel.release));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir_all(&staging)?;
    stage(kernel, &staging)?;
    let partial = image.with_extension("partial");
    checked(
        Command::new("sh")
            .arg("-c")
            .arg(format!("find . -print0 | cpio --null -o -H newc --quiet -R 0:0 > '{}'", partial.display()))
            .current_dir(&staging),
    )?;
    fs::rename(&partial, &image)?;
    fs::write(&stamp, wanted)?;
    Ok(image)
}

fn stage(kernel: &Kernel, root: &Path) -> anyhow::Result<()> {
    for dir in ["bin", "busybox/bin", "etc/libraflux-vm", "lib/modules/libraflux", "root", "tmp"] {
        fs::create_dir_all(root.join(dir))?;
    }
    copy_file(Path::new("/bin/busybox"), &root.join("busybox/bin/busybox"))?;
    write_executable(&root.join("init"), INIT)?;
    // Daemons and tools that look up users need these (the image has no other /etc).
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/usr/bin/bash\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n::1 localhost\n")?;
    // openssl reads its configuration even for `req -subj` (Debian's, a symlink into /etc/ssl).
    copy_file(&fs::canonicalize("/usr/lib/ssl/openssl.cnf")?, &root.join("usr/lib/ssl/openssl.cnf"))?;
    // ipvsadm-save and -restore are bash scripts.
    std::os::unix::fs::symlink("/usr/bin/bash", root.join("bin/bash"))?;
    let mut libraries = BTreeSet::new();
    for program in PROGRAMS {
        copy_file(Path::new(program), &root.join(program.trim_start_matches('/')))?;
        libraries.extend(shared_libraries(program)?);
    }
    libraries.extend(EXTRA_LIBRARIES.iter().map(PathBuf::from));
    for library in &libraries {
        let real = fs::canonicalize(library).with_context(|| format!("resolving {}", library.display()))?;
        copy_file(&real, &root.join(library.strip_prefix("/")?))?;
    }
    stage_modules(kernel, root)
}

/// The libraries `ldd` resolves for a dynamic program; none for scripts and static programs.
fn shared_libraries(program: &str) -> anyhow::Result<Vec<PathBuf>> {
    let Ok(text) = output(Command::new("ldd").arg(program)) else { return Ok(Vec::new()) };
    Ok(text
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Copies each module and its dependencies, in modprobe's order, and writes the load list.
fn stage_modules(kernel: &Kernel, root: &Path) -> anyhow::Result<()> {
    let mut seen = BTreeSet::new();
    let mut list = String::new();
    for module in MODULES {
        let depends = output(Command::new("modprobe").arg("-d").arg(&kernel.root).args([
            "-S",
            &kernel.release,
            "--show-depends",
            module,
        ]))?;
        for line in depends.lines() {
            let Some(rest) = line.strip_prefix("insmod ") else {
                continue; // "builtin NAME": nothing to load
            };
            let (path, args) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
            let file = Path::new(path).file_name().context("module path without a name")?.to_string_lossy();
            // 6.12's modules are xz-compressed; busybox's insmod loads plain ones.
            let name = file.strip_suffix(".xz").unwrap_or(&file).to_owned();
            if seen.insert(name.clone()) {
                let to = root.join("lib/modules/libraflux").join(&name);
                if name.len() == file.len() {
                    copy_file(Path::new(path), &to)?;
                } else {
                    checked(Command::new("xz").args(["-dc", path]).stdout(fs::File::create(&to)?))?;
                }
                list.push_str(&format!("{name} {args}\n"));
            }
        }
    }
    if list.is_empty() {
        bail!("modprobe found none of the modules in {}", kernel.root.display());
    }
    fs::write(root.join("etc/libraflux-vm/modules"), list)?;
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}
