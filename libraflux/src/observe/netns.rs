//! Doing netlink work in a given network namespace: netlink names interfaces by index in the
//! caller's namespace, so removing a filter from another thread must happen in the namespace
//! where it was added.

/// A handle on a network namespace: kept open, so the namespace lives as long as the filter in
/// it is ours to remove.
#[derive(Debug)]
pub(super) struct NetNs {
    file: std::fs::File,
}

impl NetNs {
    const SELF: &str = "/proc/thread-self/ns/net";

    pub(super) fn current() -> std::io::Result<Self> {
        Ok(Self { file: std::fs::File::open(Self::SELF)? })
    }

    fn is_current(&self) -> std::io::Result<bool> {
        use std::os::unix::fs::MetadataExt as _;
        let (ours, current) = (self.file.metadata()?, std::fs::metadata(Self::SELF)?);
        Ok((ours.dev(), ours.ino()) == (current.dev(), current.ino()))
    }

    /// Runs `f` in this namespace: here if the calling thread is in it, else on a scoped thread
    /// that enters it (setns needs CAP_SYS_ADMIN then).
    pub(super) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
        use std::os::fd::AsRawFd as _;
        if self.is_current()? {
            return Ok(f());
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: a valid namespace fd; setns changes only this (scoped) thread.
                    if unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_here_when_already_in_the_namespace() {
        let netns = NetNs::current().expect("open our namespace");
        assert!(netns.is_current().expect("compare namespaces"));
        let thread = std::thread::current().id();
        assert_eq!(netns.run(|| std::thread::current().id()).expect("run"), thread, "no extra thread");
    }
}
