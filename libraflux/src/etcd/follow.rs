//! Following a prefix: read it whole, then watch it from the next revision, and report what it
//! holds after every change. A watch that fails or ends, or an etcd that stops answering the
//! probe, means a read again after a backoff (1 s, doubling, at most 30 s); a watch whose start
//! etcd has compacted away means a read again at once. The task reports; the daemon decides
//! ([`super::node`], `daemon/etcd.rs`).

use std::{collections::BTreeMap, time::Duration};

use tokio::sync::mpsc;

use super::{Client, EtcdError, Event, EventKind, node::InForce, prefix_end};
use crate::bundle::BundleFile;

/// How often etcd is asked for something small while the watch is quiet: a watch on a
/// connection that went silent (a partition, not a closed socket) would otherwise wait forever.
const PROBE_EVERY: Duration = Duration::from_secs(10);
/// How long the probe may take.
const PROBE_WITHIN: Duration = Duration::from_secs(10);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the task tells the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// What the prefix holds: read whole, or followed through the watch to the revision of the
    /// last change it saw.
    Holds(InForce),
    /// Reading or watching failed; the next read is in `retry`.
    Failed { reason: FailReason, error: String, retry: Duration },
}

/// Why the task reads again, as counted in `libraflux_etcd_watch_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// The read failed: no endpoint answered.
    Unreachable,
    /// The watch failed, ended, or etcd stopped answering the probe.
    Lost,
    /// The watch started at a revision etcd has compacted away.
    Compacted,
}

impl FailReason {
    pub const ALL: [Self; 3] = [Self::Unreachable, Self::Lost, Self::Compacted];

    pub fn label(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Lost => "lost",
            Self::Compacted => "compacted",
        }
    }
}

/// The delays between reads after failures: doubling from [`BACKOFF_FIRST`] to [`BACKOFF_MAX`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn delay(&mut self) -> Duration {
        let delay = BACKOFF_FIRST.saturating_mul(1 << self.failures.min(5));
        self.failures = self.failures.saturating_add(1);
        delay.min(BACKOFF_MAX)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Applies a watch message's `events` to `files` (by name under `prefix`); returns the revision
/// of the last of them, 0 when there were none.
pub fn apply_events(files: &mut BTreeMap<String, Vec<u8>>, prefix: &str, events: &[Event]) -> i64 {
    let mut revision = 0;
    for event in events {
        revision = revision.max(event.kv.mod_revision);
        let Some(name) = event.kv.key.strip_prefix(prefix.as_bytes()) else { continue };
        let name = String::from_utf8_lossy(name).into_owned();
        match event.kind {
            EventKind::Put => {
                files.insert(name, event.kv.value.clone());
            }
            EventKind::Delete => {
                files.remove(&name);
            }
        }
    }
    revision
}

/// The task following `prefix`; stopped when dropped.
#[derive(Debug)]
pub struct Follower {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts following `prefix`; every report is sent with `tag`, so that the reports of a follower
/// that was replaced can be told apart.
pub fn spawn(client: Client, prefix: String, tag: u64, reports: mpsc::Sender<(u64, Report)>) -> Follower {
    Follower { task: tokio::spawn(follow(client, prefix, tag, reports)) }
}

async fn follow(client: Client, prefix: String, tag: u64, reports: mpsc::Sender<(u64, Report)>) {
    let mut backoff = Backoff::default();
    let report = |report: Report| {
        let reports = reports.clone();
        async move { reports.send((tag, report)).await.is_ok() }
    };
    loop {
        let (reason, error) = match super::fleet::read(&client, &prefix).await {
            Err(err) => (FailReason::Unreachable, err.to_string()),
            Ok(stored) => {
                let mut files: BTreeMap<String, Vec<u8>> =
                    stored.files.into_iter().map(|(name, file)| (name, file.bytes)).collect();
                if !report(Report::Holds(in_force(stored.revision, &files))).await {
                    return;
                }
                match watch(&client, &prefix, stored.revision + 1, &mut files, &mut backoff, &report).await {
                    None => return,
                    Some(failure) => failure,
                }
            }
        };
        let retry = if reason == FailReason::Compacted { Duration::ZERO } else { backoff.delay() };
        if !report(Report::Failed { reason, error, retry }).await {
            return;
        }
        tokio::time::sleep(retry).await;
    }
}

/// Watches from `from`, reporting each change; returns why it stopped, or `None` when the daemon
/// is gone.
async fn watch<F, Fut>(
    client: &Client,
    prefix: &str,
    from: i64,
    files: &mut BTreeMap<String, Vec<u8>>,
    backoff: &mut Backoff,
    report: &F,
) -> Option<(FailReason, String)>
where
    F: Fn(Report) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut watch = match client.watch(prefix.as_bytes(), &prefix_end(prefix.as_bytes()), from).await {
        Ok(watch) => watch,
        Err(err) => return Some((FailReason::Lost, err.to_string())),
    };
    backoff.reset();
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe.tick().await;
    loop {
        tokio::select! {
            next = watch.next() => match next {
                Ok(Some(response)) => {
                    let revision = apply_events(files, prefix, &response.events);
                    if !report(Report::Holds(in_force(revision, files))).await {
                        return None;
                    }
                }
                Ok(None) => return Some((FailReason::Lost, "etcd ended the watch".to_owned())),
                Err(err @ EtcdError::Compacted { .. }) => return Some((FailReason::Compacted, err.to_string())),
                Err(err) => return Some((FailReason::Lost, err.to_string())),
            },
            _ = probe.tick() => {
                match tokio::time::timeout(PROBE_WITHIN, client.range(prefix.as_bytes(), b"")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => return Some((FailReason::Lost, err.to_string())),
                    Err(_) => {
                        let error = format!("etcd did not answer a probe within {}s", PROBE_WITHIN.as_secs());
                        return Some((FailReason::Lost, error));
                    }
                }
            }
        }
    }
}

fn in_force(revision: i64, files: &BTreeMap<String, Vec<u8>>) -> InForce {
    let files =
        files.iter().map(|(name, bytes)| BundleFile { name: name.clone(), bytes: bytes.clone() }).collect();
    InForce::new(revision, files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::KeyValue;

    fn event(kind: EventKind, key: &str, value: &str, revision: i64) -> Event {
        let kv =
            KeyValue { key: key.into(), value: value.into(), mod_revision: revision, ..Default::default() };
        Event { kind, kv }
    }

    #[test]
    fn events_put_and_delete_files_under_the_prefix_and_give_the_last_revision() {
        let mut files =
            BTreeMap::from([("a.yaml".to_owned(), b"a".to_vec()), ("b.yaml".to_owned(), b"b".to_vec())]);
        let events = [
            event(EventKind::Put, "/f/a.yaml", "A", 11),
            event(EventKind::Delete, "/f/b.yaml", "", 11),
            event(EventKind::Put, "/f/c.yaml", "c", 12),
            event(EventKind::Put, "/other/d.yaml", "d", 12),
        ];
        assert_eq!(apply_events(&mut files, "/f/", &events), 12);
        let names: Vec<(&str, &[u8])> =
            files.iter().map(|(name, bytes)| (name.as_str(), bytes.as_slice())).collect();
        assert_eq!(names, [("a.yaml", &b"A"[..]), ("c.yaml", &b"c"[..])]);
        assert_eq!(apply_events(&mut files, "/f/", &[]), 0);
    }

    #[test]
    fn the_backoff_doubles_to_its_ceiling_and_starts_over_when_reset() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| backoff.delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        backoff.reset();
        assert_eq!(backoff.delay(), BACKOFF_FIRST);
    }
}
