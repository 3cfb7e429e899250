//! Per-destination traffic as the eBPF observer counts it, cached between scrapes like the IPVS
//! figures: the daemon hands over a snapshot on `metrics.collect_interval`, scrapes only encode
//! it. Series are bounded by the configuration (watched VIPs and NAT backends), not by traffic.
//! NAT backends also have their connection outcomes: failures by kind, and answers.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Mutex, PoisonError},
    time::Instant,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use crate::{
    model::Protocol,
    observe::{ConnectOutcomes, DestKey, FlowSnapshot},
};

/// One destination's figures, ready to encode.
#[derive(Clone, Debug, PartialEq)]
struct Flows {
    /// `("service", "tcp:10.0.0.1:80")` for a VIP, `("backend", "10.0.2.2:8080")` for a NAT
    /// backend: the label that joins its series to the IPVS ones (`libraflux_ipvs_*` label services
    /// `service` and backends `backend` the same way). A NAT backend is the destination whose
    /// connection outcomes are tracked; only NAT backends are.
    role: (&'static str, String),
    packets: u64,
    bytes: u64,
    new_flows: u64,
    idle_seconds: Option<f64>,
    connects: Option<ConnectOutcomes>,
}

type PickOutcome = fn(&ConnectOutcomes) -> u64;

/// The kinds of `libraflux_ebpf_connect_failures_total`, each with its count.
const FAILURE_KINDS: [(&str, PickOutcome); 3] =
    [("refused", |c| c.refused), ("syn_timeout", |c| c.syn_timeout), ("unreachable", |c| c.unreachable)];

#[derive(Debug)]
pub(super) struct EbpfCollector {
    node: String,
    /// By destination label (`udp:10.0.2.2:53`), in key order.
    flows: Mutex<BTreeMap<DestKey, (String, Flows)>>,
}

impl EbpfCollector {
    pub(super) fn new(node: &str) -> Self {
        Self { node: node.to_owned(), flows: Mutex::new(BTreeMap::new()) }
    }

    pub(super) fn set(&self, snapshot: &BTreeMap<DestKey, FlowSnapshot>, now: Instant) {
        let flows = snapshot
            .iter()
            .map(|(key, flow)| {
                let address = std::net::SocketAddr::new(key.ip(), key.port).to_string();
                let role = if flow.connects.is_some() {
                    ("backend", address)
                } else {
                    ("service", destination_label(key))
                };
                let flows = Flows {
                    role,
                    packets: flow.packets,
                    bytes: flow.bytes,
                    new_flows: flow.new_flows,
                    idle_seconds: flow.idle_for(now).map(|idle| idle.as_secs_f64()),
                    connects: flow.connects,
                };
                (*key, (destination_label(key), flows))
            })
            .collect();
        *self.flows.lock().unwrap_or_else(PoisonError::into_inner) = flows;
    }
}

fn destination_label(key: &DestKey) -> String {
    let protocol = Protocol::from_number(key.proto).map_or("ip", Protocol::as_str);
    format!("{protocol}:{}", std::net::SocketAddr::new(key.ip(), key.port))
}

impl Collector for EbpfCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        if flows.is_empty() {
            return Ok(());
        }
        type Pick = fn(&Flows) -> u64;
        let counters: [(&str, &str, Pick); 3] = [
            ("libraflux_ebpf_packets", "Packets to the destination seen by the eBPF observer", |f| f.packets),
            (
                "libraflux_ebpf_bytes",
                "Bytes to the destination seen by the eBPF observer, Ethernet header included",
                |f| f.bytes,
            ),
            (
                "libraflux_ebpf_new_flows",
                "New flows to the destination: TCP SYNs, first packets of UDP 5-tuples",
                |f| f.new_flows,
            ),
        ];
        for (name, help, pick) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (label, flow) in flows.values() {
                ConstCounter::new(pick(flow))
                    .encode(family.encode_family(&labels(&self.node, label, flow))?)?;
            }
        }
        let mut idle = encoder.encode_descriptor(
            "libraflux_ebpf_idle_seconds",
            "Seconds since the eBPF observer last saw a packet to the destination (absent: none yet)",
            None,
            MetricType::Gauge,
        )?;
        for (label, flow) in flows.values() {
            if let Some(seconds) = flow.idle_seconds {
                ConstGauge::new(seconds).encode(idle.encode_family(&labels(&self.node, label, flow))?)?;
            }
        }
        encode_connects(&self.node, &flows, &mut encoder)
    }
}

/// `node`, `destination` and the destination's `service` or `backend` label.
fn labels<'a>(node: &'a str, destination: &'a str, flow: &'a Flows) -> [(&'a str, &'a str); 3] {
    [("node", node), ("destination", destination), (flow.role.0, flow.role.1.as_str())]
}

/// The connection outcomes of the tracked backends (those with `connects`): every kind of
/// failure, zero included, and the answers. Nothing when no backend is tracked.
fn encode_connects(
    node: &str,
    flows: &BTreeMap<DestKey, (String, Flows)>,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), fmt::Error> {
    let tracked: Vec<(&str, &str, &ConnectOutcomes)> = flows
        .values()
        .filter_map(|(label, flow)| Some((label.as_str(), flow.role.1.as_str(), flow.connects.as_ref()?)))
        .collect();
    if tracked.is_empty() {
        return Ok(());
    }
    let mut failures = encoder.encode_descriptor(
        "libraflux_ebpf_connect_failures",
        "Connection attempts to the NAT backend that failed, by kind: refused (RST answering the SYN), \
         syn_timeout (SYN retransmitted), unreachable (ICMP destination unreachable)",
        None,
        MetricType::Counter,
    )?;
    for &(destination, backend, connects) in &tracked {
        for (kind, pick) in FAILURE_KINDS {
            let labels = [("node", node), ("destination", destination), ("backend", backend), ("kind", kind)];
            ConstCounter::new(pick(connects)).encode(failures.encode_family(&labels)?)?;
        }
    }
    let mut answers = encoder.encode_descriptor(
        "libraflux_ebpf_connect_answers",
        "SYN-ACKs from the NAT backend: connection attempts it accepted",
        None,
        MetricType::Counter,
    )?;
    for &(destination, backend, connects) in &tracked {
        let labels = [("node", node), ("destination", destination), ("backend", backend)];
        ConstCounter::new(connects.answered).encode(answers.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;

    /// The text exposition of a collector given `snapshot` at `now`.
    fn encoded(snapshot: &BTreeMap<DestKey, FlowSnapshot>, now: Instant) -> String {
        let collector = EbpfCollector::new("lb-a");
        collector.set(snapshot, now);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn encodes_every_failure_kind_and_the_answers_of_tracked_backends_only() {
        let outcomes = ConnectOutcomes { refused: 3, syn_timeout: 0, unreachable: 1, answered: 7 };
        let snapshot = BTreeMap::from([
            (
                DestKey::new("10.0.1.1".parse().unwrap(), 8080, 6),
                FlowSnapshot { connects: Some(outcomes), ..FlowSnapshot::default() },
            ),
            (DestKey::new("10.0.0.1".parse().unwrap(), 80, 6), FlowSnapshot::default()),
        ]);
        let text = encoded(&snapshot, Instant::now());
        let lines: Vec<&str> =
            text.lines().filter(|line| line.starts_with("libraflux_ebpf_connect")).collect();
        assert_eq!(
            lines,
            [
                r#"libraflux_ebpf_connect_failures_total{node="lb-a",destination="tcp:10.0.1.1:8080",backend="10.0.1.1:8080",kind="refused"} 3"#,
                r#"libraflux_ebpf_connect_failures_total{node="lb-a",destination="tcp:10.0.1.1:8080",backend="10.0.1.1:8080",kind="syn_timeout"} 0"#,
                r#"libraflux_ebpf_connect_failures_total{node="lb-a",destination="tcp:10.0.1.1:8080",backend="10.0.1.1:8080",kind="unreachable"} 1"#,
                r#"libraflux_ebpf_connect_answers_total{node="lb-a",destination="tcp:10.0.1.1:8080",backend="10.0.1.1:8080"} 7"#,
            ],
            "the VIP is not tracked: no connect series\n{text}"
        );
        let untracked = encoded(&BTreeMap::from([snapshot.into_iter().next().unwrap()]), Instant::now());
        assert!(!untracked.contains("connect"), "no tracked backend, no connect family:\n{untracked}");
    }

    #[test]
    fn encodes_counters_per_destination_and_idle_only_once_seen() {
        let now = Instant::now();
        let seen = FlowSnapshot {
            packets: 10,
            bytes: 1_060,
            new_flows: 2,
            last_seen: Some(now - Duration::from_secs(3)),
            connects: None,
        };
        let snapshot = BTreeMap::from([
            (DestKey::new("10.0.0.2".parse().unwrap(), 53, 17), seen),
            (DestKey::new("10.0.0.1".parse().unwrap(), 80, 6), FlowSnapshot::default()),
        ]);
        let text = encoded(&snapshot, now);
        let lines: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                r#"libraflux_ebpf_packets_total{node="lb-a",destination="tcp:10.0.0.1:80",service="tcp:10.0.0.1:80"} 0"#,
                r#"libraflux_ebpf_packets_total{node="lb-a",destination="udp:10.0.0.2:53",service="udp:10.0.0.2:53"} 10"#,
                r#"libraflux_ebpf_bytes_total{node="lb-a",destination="tcp:10.0.0.1:80",service="tcp:10.0.0.1:80"} 0"#,
                r#"libraflux_ebpf_bytes_total{node="lb-a",destination="udp:10.0.0.2:53",service="udp:10.0.0.2:53"} 1060"#,
                r#"libraflux_ebpf_new_flows_total{node="lb-a",destination="tcp:10.0.0.1:80",service="tcp:10.0.0.1:80"} 0"#,
                r#"libraflux_ebpf_new_flows_total{node="lb-a",destination="udp:10.0.0.2:53",service="udp:10.0.0.2:53"} 2"#,
                r#"libraflux_ebpf_idle_seconds{node="lb-a",destination="udp:10.0.0.2:53",service="udp:10.0.0.2:53"} 3.0"#,
            ],
            "{text}"
        );
    }
}
