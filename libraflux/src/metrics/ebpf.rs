//! Per-destination traffic as the eBPF observer counts it, cached between scrapes like the IPVS
//! figures: the daemon hands over a snapshot on `metrics.collect_interval`, scrapes only encode
//! it. Series are bounded by the configuration (watched VIPs and NAT backends), not by traffic.

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
    observe::{DestKey, FlowSnapshot},
};

/// One destination's figures, ready to encode.
#[derive(Clone, Debug, PartialEq)]
struct Flows {
    packets: u64,
    bytes: u64,
    new_flows: u64,
    idle_seconds: Option<f64>,
}

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
                let flows = Flows {
                    packets: flow.packets,
                    bytes: flow.bytes,
                    new_flows: flow.new_flows,
                    idle_seconds: flow.idle_for(now).map(|idle| idle.as_secs_f64()),
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
                let labels = [("node", self.node.as_str()), ("destination", label.as_str())];
                ConstCounter::new(pick(flow)).encode(family.encode_family(&labels)?)?;
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
                let labels = [("node", self.node.as_str()), ("destination", label.as_str())];
                ConstGauge::new(seconds).encode(idle.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;

    #[test]
    fn encodes_counters_per_destination_and_idle_only_once_seen() {
        let collector = EbpfCollector::new("lb-a");
        let now = Instant::now();
        let seen = FlowSnapshot {
            packets: 10,
            bytes: 1_060,
            new_flows: 2,
            last_seen: Some(now - Duration::from_secs(3)),
        };
        let snapshot = BTreeMap::from([
            (DestKey::new("10.0.0.2".parse().unwrap(), 53, 17), seen),
            (DestKey::new("10.0.0.1".parse().unwrap(), 80, 6), FlowSnapshot::default()),
        ]);
        collector.set(&snapshot, now);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        let lines: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                r#"libraflux_ebpf_packets_total{node="lb-a",destination="tcp:10.0.0.1:80"} 0"#,
                r#"libraflux_ebpf_packets_total{node="lb-a",destination="udp:10.0.0.2:53"} 10"#,
                r#"libraflux_ebpf_bytes_total{node="lb-a",destination="tcp:10.0.0.1:80"} 0"#,
                r#"libraflux_ebpf_bytes_total{node="lb-a",destination="udp:10.0.0.2:53"} 1060"#,
                r#"libraflux_ebpf_new_flows_total{node="lb-a",destination="tcp:10.0.0.1:80"} 0"#,
                r#"libraflux_ebpf_new_flows_total{node="lb-a",destination="udp:10.0.0.2:53"} 2"#,
                r#"libraflux_ebpf_idle_seconds{node="lb-a",destination="udp:10.0.0.2:53"} 3.0"#,
            ],
            "{text}"
        );
    }
}
