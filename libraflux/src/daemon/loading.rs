//! Loading eBPF off the daemon's loop. The kernel's verifier walks every program as it loads:
//! milliseconds natively, seconds on a slow or emulated CPU. The runtime has one thread, so a load
//! made on it holds back everything else (watchdog pings, health checks and their verdicts, the
//! control socket, metrics scrapes) for as long, and one the loop awaits holds back the loop. A
//! load after start therefore runs on the blocking pool and its result comes back to the loop as
//! one more event.

use tokio::sync::mpsc;

use super::{Daemon, observer::Counters};
use crate::observe::{ObserveError, WriteWatch};

/// What a load on the blocking pool gave.
pub(super) enum Loaded {
    /// The eBPF observer's two counters (a retry, or a start after a reload).
    Observer(Result<Box<Counters>, ObserveError>),
    /// The IPVS write watch, not yet checked against a write of the daemon's own.
    WriteWatch(Result<WriteWatch, ObserveError>),
}

/// Starts loads; the loop receives what they give from the receiver [`channel`] returned.
#[derive(Clone, Debug)]
pub(super) struct Loader(mpsc::UnboundedSender<Loaded>);

pub(super) fn channel() -> (Loader, mpsc::UnboundedReceiver<Loaded>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (Loader(sender), receiver)
}

impl Loader {
    /// Runs `load` on the blocking pool. A result that arrives after the loop ended is dropped,
    /// and with it what it loaded (programs detach when their last handle closes).
    pub(super) fn spawn(&self, load: impl FnOnce() -> Loaded + Send + 'static) {
        let sender = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let _ = sender.send(load());
        });
    }
}

impl Daemon {
    /// Takes in what a load gave.
    pub(super) async fn loaded(&mut self, loaded: Loaded) {
        match loaded {
            Loaded::Observer(result) => {
                self.observer.loaded(result, &self.config);
                self.metrics.set_ebpf_attached(self.observer.attached());
            }
            Loaded::WriteWatch(result) => {
                self.table_watch.loaded(result, &mut self.ipvs, &self.metrics).await;
            }
        }
    }
}
