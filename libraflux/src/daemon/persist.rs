//! Writing the drain state without holding the daemon loop: the loop hands each new state to a
//! writer task and goes on; the writer writes the newest state it was handed (states handed over
//! while it writes are coalesced into the next write) on tokio's blocking pool. An answer that
//! promises a drain is recorded waits for its state to be written ([`DrainWriter::written`]), and
//! the daemon waits for the last one before it exits.

use std::sync::Arc;

use tokio::sync::watch;

use super::observer::render;
use crate::drain::{DrainEntry, DrainStore};

/// A state handed to the writer, numbered.
#[derive(Clone, Default)]
struct Handed {
    generation: u64,
    drains: Arc<Vec<DrainEntry>>,
}

/// The last write: which generation, and why it failed if it did.
#[derive(Clone, Default)]
struct Written {
    generation: u64,
    error: Option<String>,
}

pub(super) struct DrainWriter {
    next: watch::Sender<Handed>,
    written: watch::Receiver<Written>,
    generation: u64,
}

impl DrainWriter {
    /// Starts the writer task for `store`. Must run inside a Tokio runtime.
    pub(super) fn spawn(store: DrainStore) -> Self {
        let (next, mut handed) = watch::channel(Handed::default());
        let (report, written) = watch::channel(Written::default());
        tokio::spawn(async move {
            // Ends when the sender is gone and the last state handed over is written.
            while handed.changed().await.is_ok() {
                let Handed { generation, drains } = handed.borrow_and_update().clone();
                let store = store.clone();
                let error = match tokio::task::spawn_blocking(move || store.save(&drains)).await {
                    Ok(Ok(())) => None,
                    Ok(Err(err)) => Some(render(&err)),
                    Err(err) => Some(format!("the writer failed: {err}")),
                };
                if let Some(error) = &error {
                    tracing::error!(%error, "cannot record the drain state; the daemon runs on what it holds in memory");
                }
                report.send_replace(Written { generation, error });
            }
        });
        Self { next, written, generation: 0 }
    }

    /// Hands `drains` over to be written; returns its generation.
    pub(super) fn hand(&mut self, drains: Vec<DrainEntry>) -> u64 {
        self.generation += 1;
        self.next.send_replace(Handed { generation: self.generation, drains: Arc::new(drains) });
        self.generation
    }

    /// Waits until `generation` (or a later state) is written; why not, if that write failed.
    pub(super) async fn written(&mut self, generation: u64) -> Result<(), String> {
        let written = self
            .written
            .wait_for(|written| written.generation >= generation)
            .await
            .map_err(|_| "the drain state writer stopped".to_owned())?;
        written.error.clone().map_or(Ok(()), Err)
    }

    /// Waits for the last state handed over to be written (before the daemon exits).
    pub(super) async fn flush(&mut self) {
        let _ = self.written(self.generation).await;
    }
}
