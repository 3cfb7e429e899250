//! Announcing VIPs over BGP through BIRD 2 (docs/fleet.md). LibraFlux speaks no BGP itself: it
//! owns one file that BIRD's configuration includes ([`file`]), writes into it the routes of the
//! VIPs whose services serve ([`gate`]), and has BIRD read its configuration again over its
//! control socket ([`bird`]). BIRD answers with a code: a refusal puts the last file BIRD took
//! back in place, so that what is on disk is what BIRD runs, and is reported.

pub mod bird;
pub mod file;
pub mod gate;

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, time::SystemTime};

pub use self::{
    bird::BirdError,
    file::{FileError, PROTOCOL_V4, PROTOCOL_V6},
    gate::{Decision, HoldDown, VipServing, serving},
};
use crate::{config::Announce, daemon::blocking};

/// How one attempt to put a set of VIPs in force ended, as `libraflux_bird_reconfigures_total`
/// labels it.
pub const RESULTS: [&str; 4] = ["ok", "rejected", "unreachable", "file_error"];

/// Why the VIPs wanted are not what BIRD runs.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The include file could not be written: BIRD was not asked.
    #[error("cannot write the announce file: {0}")]
    File(#[source] FileError),
    /// BIRD refused its configuration with the new file: the previous file is back in place
    /// (unless putting it back failed too, `restore`) and BIRD runs what it ran before.
    #[error("{bird}; the previous announce file is back in place{}", restore_failure(.restore))]
    Rejected {
        #[source]
        bird: BirdError,
        restore: Option<FileError>,
    },
    /// BIRD could not be asked (no socket, no answer): the new file stays, for BIRD to read when
    /// it starts or is next reconfigured.
    #[error("{0}; the new announce file stays for BIRD's next start or reconfigure")]
    Unreachable(#[source] BirdError),
}

fn restore_failure(restore: &Option<FileError>) -> String {
    restore.as_ref().map_or(String::new(), |err| format!(", except that putting it back failed: {err}"))
}

impl PublishError {
    /// Its label among [`RESULTS`].
    pub const fn result(&self) -> &'static str {
        match self {
            Self::File(_) => "file_error",
            Self::Rejected { .. } => "rejected",
            Self::Unreachable(_) => "unreachable",
        }
    }
}

/// The last attempt to put a set of VIPs in force.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    #[serde(serialize_with = "unix_seconds")]
    pub at: SystemTime,
    pub vips: BTreeSet<IpAddr>,
    /// One of [`RESULTS`].
    pub result: &'static str,
    pub error: Option<String>,
}

fn unix_seconds<S: serde::Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_secs()))
}

/// What LibraFlux knows of what BIRD runs, and the file that goes with it.
#[derive(Debug, Default)]
pub struct Announcer {
    /// The VIPs of the last file BIRD took; `None` before BIRD first took one of ours.
    accepted: Option<BTreeSet<IpAddr>>,
    /// The bytes of the last file BIRD took (or of the file found before the first attempt):
    /// what a refusal puts back. `None`: there was no file.
    last_good: Option<Vec<u8>>,
    pub last: Option<Attempt>,
}

impl Announcer {
    /// Starts from the include file as found (`file::read`), which BIRD presumably runs.
    pub fn new(found: Option<Vec<u8>>) -> Self {
        Self { accepted: None, last_good: found, last: None }
    }

    /// The VIPs BIRD announces for us as far as we know: those of the last file it took.
    pub fn announced(&self) -> BTreeSet<IpAddr> {
        self.accepted.clone().unwrap_or_default()
    }

    /// Whether BIRD runs exactly `vips` for us.
    pub fn runs(&self, vips: &BTreeSet<IpAddr>) -> bool {
        self.accepted.as_ref() == Some(vips)
    }

    /// Writes the file for `vips` and has BIRD reconfigure; on a refusal puts the last good file
    /// back. File I/O runs on tokio's blocking pool.
    pub async fn publish(&mut self, announce: &Announce, vips: BTreeSet<IpAddr>) -> Result<(), PublishError> {
        let bytes = file::render(&vips).into_bytes();
        let path = announce.include.clone();
        let outcome = self.try_publish(announce, path, bytes).await;
        self.last = Some(Attempt {
            at: SystemTime::now(),
            vips: vips.clone(),
            result: outcome.as_ref().map_or_else(PublishError::result, |()| "ok"),
            error: outcome.as_ref().err().map(ToString::to_string),
        });
        if outcome.is_ok() {
            self.accepted = Some(vips);
        }
        outcome
    }

    async fn try_publish(
        &mut self,
        announce: &Announce,
        path: PathBuf,
        bytes: Vec<u8>,
    ) -> Result<(), PublishError> {
        let written = bytes.clone();
        let write_path = path.clone();
        blocking(move || file::write(&write_path, &written)).await.map_err(PublishError::File)?;
        match bird::configure(&announce.socket, announce.timeout).await {
            Ok(_) => {
                self.last_good = Some(bytes);
                Ok(())
            }
            Err(bird) if bird.is_refusal() => {
                let previous = self.last_good.clone();
                let restore = blocking(move || file::restore(&path, previous.as_deref())).await.err();
                Err(PublishError::Rejected { bird, restore })
            }
            Err(bird) => Err(PublishError::Unreachable(bird)),
        }
    }
}

/// Withdraws every VIP of `announce`: the file with no routes, and a reconfigure. What
/// `libraflux announce withdraw` does, on the unit's stop path, when the daemon is gone.
pub async fn withdraw_all(announce: &Announce) -> Result<(), PublishError> {
    let path = announce.include.clone();
    let found = blocking(move || file::read(&path)).await.map_err(PublishError::File)?;
    Announcer::new(found).publish(announce, BTreeSet::new()).await
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};

    /// A directory of its own under the system's temp directory, removed on drop.
    pub(crate) struct Scratch(PathBuf);

    impl Scratch {
        pub fn new(name: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("libraflux-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
