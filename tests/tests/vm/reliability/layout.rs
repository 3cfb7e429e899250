//! The config the reliability suite applies, as a value: rendered to YAML for libraflux and to
//! the lines `ipvsadm-save -n` must then print.

use std::fmt::Write as _;

use libraflux_tests::sorted_lines;

use super::{B1, B2, VIP};

/// The web service's TCP health check: `fall` failures `interval` apart take a backend out.
pub const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
pub const HEALTH_FALL: u32 = 2;

/// How long a UDP backend that leaves the config is drained before it is deleted.
pub const UDP_DRAIN_TIMEOUT: &str = "8s";

/// One IPVS service of the test's config, with its backends (address, weight).
#[derive(Clone, Debug)]
pub struct Svc {
    pub name: String,
    pub protocol: &'static str,
    pub port: u16,
    pub backend_port: u16,
    pub scheduler: &'static str,
    pub persistence: Option<u32>,
    /// A TCP health check (the daemon's; `apply` ignores it), else none.
    pub health: bool,
    pub backends: Vec<(String, u32)>,
}

impl Svc {
    pub fn weight(&mut self, address: &str, weight: u32) {
        let backend =
            self.backends.iter_mut().find(|(a, _)| *a == address).expect("a backend of the service");
        backend.1 = weight;
    }

    pub fn add(&mut self, address: &str, weight: u32) {
        self.backends.push((address.to_owned(), weight));
    }

    pub fn remove(&mut self, address: &str) {
        self.backends.retain(|(a, _)| *a != address);
    }

    fn vip(&self) -> String {
        format!("{VIP}:{}", self.port)
    }

    fn yaml(&self, out: &mut String) {
        let _ = write!(
            out,
            "  - name: {}\n    protocol: {}\n    vip: {VIP}\n    port: {}\n    scheduler: {}\n",
            self.name, self.protocol, self.port, self.scheduler
        );
        if let Some(seconds) = self.persistence {
            let _ = writeln!(out, "    persistence: {seconds}s");
        }
        if self.health {
            let _ = write!(
                out,
                "    health:\n      type: tcp\n      interval: {}s\n      timeout: 500ms\n      rise: 2\n      \
                 fall: {HEALTH_FALL}\n    on_unhealthy: quiesce\n",
                HEALTH_INTERVAL.as_secs()
            );
        } else {
            out.push_str("    health:\n      type: none\n");
        }
        // Short drains, so what leaves the config is deleted within the suite's time. TCP waits
        // out the long-lived connections (LIFETIME). A UDP drain mostly ends by its timeout: IPVS
        // keeps sending a datagram whose source port repeats a flow it still holds (300 s) to the
        // backend at weight 0, and with a fresh port per request that happens every few seconds.
        let timeout = if self.protocol == "udp" { UDP_DRAIN_TIMEOUT } else { "60s" };
        let _ = writeln!(out, "    drain: {{ grace: 1s, quiet: 2s, timeout: {timeout} }}");
        out.push_str("    backends:\n");
        for (address, weight) in &self.backends {
            let _ = writeln!(
                out,
                "      - {{ address: {address}, port: {}, weight: {weight} }}",
                self.backend_port
            );
        }
    }

    /// The lines `ipvsadm-save -n` prints for this service.
    fn saved(&self, out: &mut String) {
        let flag = if self.protocol == "udp" { "-u" } else { "-t" };
        let persistence = self.persistence.map(|seconds| format!(" -p {seconds}")).unwrap_or_default();
        let _ = writeln!(out, "-A {flag} {} -s {}{persistence}", self.vip(), self.scheduler);
        for (address, weight) in &self.backends {
            let _ =
                writeln!(out, "-a {flag} {} -r {address}:{} -m -w {weight}", self.vip(), self.backend_port);
        }
    }
}

/// What the config asks for, and so what the table must show once an operation is done.
#[derive(Clone, Debug)]
pub struct Layout {
    pub services: Vec<Svc>,
    /// The large set: [`LARGE_SERVICES`] services nobody sends to, [`LARGE_BACKENDS`] each.
    pub large: bool,
}

/// The large reload: more IPVS operations than one netlink batch carries (4,096 requests), so
/// a SIGKILL while the kernel works through the first batch leaves the table half done (a kill
/// takes effect when `sendmsg` returns, and the daemon then dies before the next batch). Many
/// backends per service rather than many services: the config stays small enough to load in
/// seconds under TCG (2,100 one-backend services took 34 s to load under the load, and every
/// reconcile of them 8-18 s even without it).
pub const LARGE_SERVICES: u16 = 50;
pub const LARGE_BACKENDS: u8 = 90;
/// The large services listen on `LARGE_PORTS + i`; their backends are 10.210.0.1-90 (routed
/// to the VIP's dummy link, never sent to) on the same port.
pub const LARGE_PORTS: u16 = 10_000;

impl Layout {
    pub fn initial() -> Self {
        let service = |name: &str, protocol, port, backend_port, health| Svc {
            name: name.to_owned(),
            protocol,
            port,
            backend_port,
            scheduler: "wrr",
            persistence: None,
            health,
            backends: vec![(B1.to_owned(), 1), (B2.to_owned(), 1)],
        };
        Self {
            services: vec![
                service("web", "tcp", 80, 8080, true),
                service("dns", "udp", 53, 5300, false),
                service("chat", "tcp", 81, 8081, false),
            ],
            large: false,
        }
    }

    pub fn service(&mut self, name: &str) -> &mut Svc {
        self.services.iter_mut().find(|service| service.name == name).expect("a configured service")
    }

    fn extras(&self) -> impl Iterator<Item = Svc> {
        let count = if self.large { LARGE_SERVICES } else { 0 };
        (0..count).map(|index| Svc {
            name: format!("large-{index}"),
            protocol: "tcp",
            port: LARGE_PORTS + index,
            backend_port: LARGE_PORTS + index,
            scheduler: "rr",
            persistence: None,
            health: false,
            backends: (1..=LARGE_BACKENDS).map(|host| (format!("10.210.0.{host}"), 1)).collect(),
        })
    }

    pub fn yaml(&self) -> String {
        let mut out = String::from(
            "node:\n  interface: [lfvip0, lf-c]\nlimits:\n  max_services_created: 100\n  max_services_deleted: 100\n  \
             max_backends_per_service: 100\nservices:\n",
        );
        for service in &self.services {
            service.yaml(&mut out);
        }
        for service in self.extras() {
            service.yaml(&mut out);
        }
        out
    }

    pub fn saved(&self) -> String {
        let mut out = String::new();
        for service in self.services.iter().cloned().chain(self.extras()) {
            service.saved(&mut out);
        }
        sorted_lines(&out)
    }

    pub fn service_count(&self) -> usize {
        self.services.len() + self.extras().count()
    }
}
