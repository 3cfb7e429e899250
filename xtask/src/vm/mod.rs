//! A throwaway VM with Debian's stock kernel under qemu (TCG): real IPVS for tests and the demo.
//!
//! The workspace is shared read-write over 9p at the same path as on the host, so host-built
//! binaries run unchanged; a job is a bash script. Its output comes back byte-exact over the
//! second serial port, printed live, and its exit status over the console.

pub mod initramfs;
pub mod kernel;

use std::{
    fs,
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::util::workspace_root;

#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// The kernel series to boot (kernel::KERNELS: 6.1, 6.12).
    #[arg(long, default_value = "6.1")]
    pub kernel: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Kill the VM after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// The command to run in the guest (through bash, in the workspace directory).
    #[arg(trailing_var_arg = true, required = true)]
    pub command: Vec<String>,
}

/// `cargo xtask vm -- CMD...`: exits with the guest command's status.
pub fn run_command(args: &VmArgs) -> anyhow::Result<()> {
    let script = args.command.iter().map(|arg| shell_quote(arg)).collect::<Vec<_>>().join(" ");
    let kernel = kernel::Series::named(&args.kernel)?;
    let vm = Vm { memory_mib: args.memory, timeout: Duration::from_secs(args.timeout), kernel, label: None };
    let status = vm.run(&script)?;
    if status != 0 {
        std::process::exit(status);
    }
    Ok(())
}

/// How to boot the guest.
#[derive(Debug, Clone)]
pub struct Vm {
    pub memory_mib: u32,
    pub timeout: Duration,
    pub kernel: kernel::Series,
    /// Prefixes each line of the job's output (`[6.12] `) when VMs run side by side.
    pub label: Option<String>,
}

impl Default for Vm {
    /// 40 minutes: the VM tier runs every VM test in one boot, about 24 minutes under TCG on a
    /// quiet 2-core host; this bound only catches a hung guest.
    fn default() -> Self {
        Self {
            memory_mib: 1024,
            timeout: Duration::from_secs(2400),
            kernel: kernel::Series::default(),
            label: None,
        }
    }
}

impl Vm {
    /// Boots the VM, runs `script` with bash in the workspace directory, and returns its exit
    /// status. Fails if the guest never reports one (kernel panic, timeout).
    pub fn run(&self, script: &str) -> anyhow::Result<i32> {
        let kernel = kernel::ensure(self.kernel)?;
        let initramfs = initramfs::ensure(&kernel)?;
        let share = workspace_root();
        let dir = run_dir()?;
        let job = dir.join("job.sh");
        fs::write(&job, format!("set -u\nexport RUST_BACKTRACE=1\ncd '{}'\n{script}\n", share.display()))?;
        let console = dir.join("console.log");
        let output = dir.join("output.log");
        let started = Instant::now();
        let mut qemu = self.spawn_qemu(&kernel.vmlinux, &initramfs, &share, &job, &console, &output)?;
        let finished = follow_output(&mut qemu, &output, self.timeout, self.label.as_deref())?;
        let console_text = fs::read_to_string(&console).unwrap_or_default();
        if !finished {
            bail!("the VM did not finish within {:?}; console:\n{}", self.timeout, tail(&console_text, 40));
        }
        let status = console_text
            .lines()
            .find_map(|line| line.trim().strip_prefix("LIBRAFLUX_VM_EXIT="))
            .and_then(|code| code.trim().parse().ok())
            .with_context(|| {
                format!("the VM exited without a job status; console:\n{}", tail(&console_text, 40))
            })?;
        eprintln!(
            "vm: {} job exited with {status} after {:.1}s (logs in {})",
            kernel.release,
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        Ok(status)
    }

    fn spawn_qemu(
        &self,
        vmlinux: &Path,
        initramfs: &Path,
        share: &Path,
        job: &Path,
        console: &Path,
        output: &Path,
    ) -> anyhow::Result<Child> {
        let append = format!(
            "console=ttyS0 quiet panic=-1 mitigations=off rdinit=/init libraflux.share={} libraflux.job={}",
            share.display(),
            job.display()
        );
        let mut command = Command::new("qemu-system-x86_64");
        command
            .args(["-accel", "tcg", "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot"])
            .args(["-m", &self.memory_mib.to_string()])
            .arg("-kernel")
            .arg(vmlinux)
            .arg("-initrd")
            .arg(initramfs)
            .args(["-append", &append])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-serial")
            .arg(format!("file:{}", output.display()))
            .arg("-virtfs")
            .arg(format!("local,path={},mount_tag=hostshare,security_model=none", share.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        command.spawn().context("starting qemu-system-x86_64 (run `cargo xtask setup`)")
    }
}

/// Prints the job's output as it arrives until qemu exits, whole lines prefixed with `label`
/// when there is one; false if the timeout killed it.
fn follow_output(
    qemu: &mut Child,
    output: &Path,
    timeout: Duration,
    label: Option<&str>,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut offset = 0u64;
    let mut pending = Vec::new();
    loop {
        let exited = qemu.try_wait()?.is_some();
        if let Ok(mut file) = fs::File::open(output) {
            file.seek(SeekFrom::Start(offset))?;
            let mut fresh = Vec::new();
            file.read_to_end(&mut fresh)?;
            offset += fresh.len() as u64;
            pending.extend_from_slice(&fresh);
            // With a label, the last unfinished line waits for its end, unless qemu is gone.
            let print = match label {
                Some(_) if !exited => pending.iter().rposition(|&byte| byte == b'\n').map_or(0, |at| at + 1),
                _ => pending.len(),
            };
            let text: Vec<u8> = pending.drain(..print).collect();
            let mut stdout = std::io::stdout().lock();
            match label {
                None => stdout.write_all(&text)?,
                Some(label) => {
                    for line in text.split_inclusive(|&byte| byte == b'\n') {
                        stdout.write_all(label.as_bytes())?;
                        stdout.write_all(line)?;
                    }
                }
            }
            stdout.flush()?;
        }
        if exited {
            return Ok(true);
        }
        if Instant::now() > deadline {
            qemu.kill()?;
            qemu.wait()?;
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_dir() -> anyhow::Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = kernel::cache_dir().join("runs").join(format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b)) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}
