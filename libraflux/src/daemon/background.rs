//! The daemon's background tasks: the metrics endpoint (`/metrics`, `/healthz`, `/status`) and
//! the IPVS statistics collector (on its own netlink socket, every `metrics.collect_interval`, so
//! scrapes never touch the kernel). A reload that changes `metrics.listen` moves the endpoint
//! (the new address is bound before the reload is accepted, so a reload to an address that is
//! taken is rejected whole); one that names another `web_config` loads it before the reload is
//! accepted too (a file that does not load rejects the reload); one that changes
//! `collect_interval` restarts the collector.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};

use crate::{
    config::Config,
    ipvs::IpvsClient,
    metrics::{
        self, Metrics,
        http::{Endpoint, EndpointError, Server},
        web::WebSource,
    },
};

/// A task and the switch that stops it.
struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Task {
    fn spawn<F: Future<Output = ()> + Send + 'static>(run: impl FnOnce(Stopped) -> F) -> Self {
        let (stop, stopped) = watch::channel(false);
        Self { stop, handle: tokio::spawn(run(Stopped(stopped))) }
    }

    /// Asks the task to stop and waits up to `within` for it.
    async fn stop(self, name: &str, within: Duration) {
        self.stop.send_replace(true);
        if tokio::time::timeout(within, self.handle).await.is_err() {
            tracing::warn!("the {name} did not stop within {within:?}");
        }
    }
}

/// Completes when the task is asked to stop.
struct Stopped(watch::Receiver<bool>);

impl Stopped {
    async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// What a reload that is not yet accepted needs: a metrics listener bound if the address moves,
/// the web configuration loaded if another is named.
pub(super) struct Prepared {
    server: Option<Server>,
    web: Option<Option<Arc<WebSource>>>,
}

pub(super) struct Background {
    endpoint: Endpoint,
    web: watch::Sender<Option<Arc<WebSource>>>,
    http: Task,
    listen: SocketAddr,
    collector: Task,
    collect_interval: Duration,
    /// The IPVS write watch's count of writes (`None`: no watch), for the collector.
    table_writes: watch::Receiver<Option<u64>>,
}

/// How long a stopping task may take.
const STOP_WITHIN: Duration = Duration::from_secs(10);

impl Background {
    pub(super) async fn start(
        config: &Config,
        mut endpoint: Endpoint,
        table_writes: watch::Receiver<Option<u64>>,
    ) -> anyhow::Result<Self> {
        let (web, web_reader) = watch::channel(open_web(config.metrics.web_config.as_deref())?);
        endpoint.web = web_reader;
        let server = Server::bind(config.metrics.listen, endpoint.clone()).await?;
        let listen = config.metrics.listen;
        let http = serve(server);
        let interval = config.metrics.collect_interval;
        let collector = collect(Arc::clone(&endpoint.metrics), interval, table_writes.clone()).await?;
        Ok(Self { endpoint, web, http, listen, collector, collect_interval: interval, table_writes })
    }

    /// Binds `config`'s metrics listener if it moves, and loads its web configuration if it
    /// names another, before the reload is accepted.
    pub(super) async fn prepare(&self, config: &Config) -> Result<Prepared, EndpointError> {
        let configured = config.metrics.web_config.as_deref();
        let web = (configured != self.web.borrow().as_ref().map(|source| source.configured()))
            .then(|| open_web(configured))
            .transpose()?;
        let server = if config.metrics.listen == self.listen {
            None
        } else {
            Some(Server::bind(config.metrics.listen, self.endpoint.clone()).await?)
        };
        Ok(Prepared { server, web })
    }

    /// Applies an accepted reload: serves on the listener [`Background::prepare`] bound (and stops
    /// the old one), restarts the collector when its interval changed.
    pub(super) async fn reconfigure(&mut self, config: &Config, prepared: Prepared) {
        if let Some(web) = prepared.web {
            let mode = if web.is_some() { "with" } else { "without" };
            tracing::info!("metrics endpoint: serving {mode} metrics.web_config from now on");
            self.web.send_replace(web);
        }
        if let Some(server) = prepared.server {
            let old = std::mem::replace(&mut self.http, serve(server));
            old.stop("metrics endpoint", STOP_WITHIN).await;
            tracing::info!(from = %self.listen, to = %config.metrics.listen, "metrics endpoint moved");
            self.listen = config.metrics.listen;
        }
        if config.metrics.collect_interval != self.collect_interval {
            let writes = self.table_writes.clone();
            match collect(Arc::clone(&self.endpoint.metrics), config.metrics.collect_interval, writes).await {
                Ok(collector) => {
                    let old = std::mem::replace(&mut self.collector, collector);
                    old.stop("IPVS statistics collector", STOP_WITHIN).await;
                    self.collect_interval = config.metrics.collect_interval;
                    tracing::info!(interval = ?self.collect_interval, "IPVS statistics collected on the new interval");
                }
                Err(err) => tracing::error!(
                    error = %format!("{err:#}"),
                    "cannot restart the IPVS statistics collector; it keeps its old interval"
                ),
            }
        }
    }

    pub(super) async fn stop(self) {
        self.http.stop("metrics endpoint", STOP_WITHIN).await;
        self.collector.stop("IPVS statistics collector", STOP_WITHIN).await;
    }
}

/// Loads `metrics.web_config`, logging its warnings.
fn open_web(configured: Option<&Path>) -> Result<Option<Arc<WebSource>>, EndpointError> {
    let Some(configured) = configured else { return Ok(None) };
    let (source, warnings) = WebSource::open(configured)?;
    for warning in warnings {
        tracing::warn!("metrics.web_config: {warning}");
    }
    Ok(Some(Arc::new(source)))
}

fn serve(server: Server) -> Task {
    tracing::info!(listen = %server.local_addr(), "serving /metrics, /healthz and /status");
    Task::spawn(|stopped| server.serve(stopped.wait()))
}

async fn collect(
    metrics: Arc<Metrics>,
    interval: Duration,
    table_writes: watch::Receiver<Option<u64>>,
) -> anyhow::Result<Task> {
    let mut ipvs = IpvsClient::connect().await?;
    Ok(Task::spawn(move |stopped| async move {
        metrics::collect_ipvs(&mut ipvs, &metrics, interval, table_writes, stopped.wait()).await;
    }))
}
