//! Writing the daemon's state files (drains, canaries) without holding the daemon loop: the loop
//! hands each new state to a writer task and goes on; the writer writes the newest state it was
//! handed (states handed over while it writes are coalesced into the next write) on tokio's
//! blocking pool. An answer that promises a change is recorded waits for its state to be written
//! ([`StateWriter::written`]), and the daemon waits for the last one before it exits.

use std::sync::Arc;

use tokio::sync::watch;

use super::observer::render;
use crate::{canary::CanaryStore, drain::DrainStore};

/// A state handed to the writer, numbered.
struct Handed<T> {
    generation: u64,
    state: Option<Arc<T>>,
}

impl<T> Clone for Handed<T> {
    fn clone(&self) -> Self {
        Self { generation: self.generation, state: self.state.clone() }
    }
}

/// The last write: which generation, and why it failed if it did.
#[derive(Clone, Default)]
struct Written {
    generation: u64,
    error: Option<String>,
}

pub(super) struct StateWriter<T> {
    next: watch::Sender<Handed<T>>,
    written: watch::Receiver<Written>,
    generation: u64,
}

pub(super) type DrainWriter = StateWriter<Vec<crate::drain::DrainEntry>>;
pub(super) type CanaryWriter = StateWriter<Vec<crate::canary::CanaryEntry>>;

impl DrainWriter {
    pub(super) fn drains(store: DrainStore) -> Self {
        Self::spawn("drain", move |drains| store.save(drains).map_err(|err| render(&err)))
    }
}

impl CanaryWriter {
    pub(super) fn canaries(store: CanaryStore) -> Self {
        Self::spawn("canary", move |canaries| store.save(canaries).map_err(|err| render(&err)))
    }
}

impl<T: Send + Sync + 'static> StateWriter<T> {
    /// Starts the writer task, which saves with `save`; `what` names the state in its log lines.
    /// Must run inside a Tokio runtime.
    fn spawn(what: &'static str, save: impl Fn(&T) -> Result<(), String> + Send + Sync + 'static) -> Self {
        let (next, mut handed) = watch::channel(Handed { generation: 0, state: None });
        let (report, written) = watch::channel(Written::default());
        let save = Arc::new(save);
        tokio::spawn(async move {
            // Ends when the sender is gone and the last state handed over is written.
            while handed.changed().await.is_ok() {
                let Handed { generation, state } = handed.borrow_and_update().clone();
                let Some(state) = state else { continue };
                let save = Arc::clone(&save);
                let error = match tokio::task::spawn_blocking(move || save(&state)).await {
                    Ok(Ok(())) => None,
                    Ok(Err(err)) => Some(err),
                    Err(err) => Some(format!("the writer failed: {err}")),
                };
                if let Some(error) = &error {
                    tracing::error!(%error, "cannot record the {what} state; the daemon runs on what it holds in memory");
                }
                report.send_replace(Written { generation, error });
            }
        });
        Self { next, written, generation: 0 }
    }

    /// Hands `state` over to be written; returns its generation.
    pub(super) fn hand(&mut self, state: T) -> u64 {
        self.generation += 1;
        self.next.send_replace(Handed { generation: self.generation, state: Some(Arc::new(state)) });
        self.generation
    }

    /// Waits until `generation` (or a later state) is written; why not, if that write failed.
    pub(super) async fn written(&mut self, generation: u64) -> Result<(), String> {
        let written = self
            .written
            .wait_for(|written| written.generation >= generation)
            .await
            .map_err(|_| "the state writer stopped".to_owned())?;
        written.error.clone().map_or(Ok(()), Err)
    }

    /// Waits for the last state handed over to be written (before the daemon exits).
    pub(super) async fn flush(&mut self) {
        let _ = self.written(self.generation).await;
    }
}
