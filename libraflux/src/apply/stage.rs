//! How long each stage of a command took, for benchmarks: one `debug` event per stage with the
//! target `libraflux::stage`, the stage's name and its wall-clock seconds. Off at the default log
//! level; `RUST_LOG=info,libraflux::stage=debug` shows them on stderr (`cargo xtask bench apply`
//! reads them there), so the benchmark times the very code the operator runs.

use std::time::Instant;

/// A stage that is running; its time is logged when it is dropped (so also on an early return).
#[derive(Debug)]
#[must_use = "a stage is timed until it is dropped"]
pub struct Stage {
    name: &'static str,
    started: Instant,
}

impl Stage {
    pub fn start(name: &'static str) -> Self {
        Self { name, started: Instant::now() }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        tracing::debug!(target: "libraflux::stage", stage = self.name, seconds, "stage done");
    }
}

/// Runs `f` as the stage `name`.
pub fn timed<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    let _stage = Stage::start(name);
    f()
}
