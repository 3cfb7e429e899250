//! The checks themselves: pure functions of the node's facts and the desired state.

use std::collections::{BTreeMap, BTreeSet};

use super::{CHECK_NAMES, CheckResult, NodeFacts, Report, Verdict};
use crate::{
    config::SyncConfig,
    model::{Service, ServiceKey},
};

/// Average hash-chain length above which the connection table is called too small.
const MAX_AVERAGE_CHAIN: u64 = 8;
/// How many offending objects a reason names before it says "and N more".
const NAMED_IN_REASON: usize = 5;

/// What the checks need from the configuration and the command line.
#[derive(Clone, Copy, Debug)]
pub struct CheckInput<'a> {
    pub desired: &'a BTreeMap<ServiceKey, Service>,
    /// The node's configured interfaces (`node.interface`): VIPs belong on one of them.
    pub interfaces: &'a [String],
    /// Connections the operator expects at peak, to size the connection table against.
    pub expected_connections: Option<u64>,
    /// Check names to skip.
    pub skip: &'a [String],
    /// `sync:` of the configuration, if any.
    pub sync: Option<&'a SyncConfig>,
}

/// Runs every check in [`CHECK_NAMES`] order.
pub fn run_checks(input: &CheckInput<'_>, facts: &NodeFacts) -> Report {
    let checks = CHECK_NAMES
        .iter()
        .map(|&name| {
            if input.skip.iter().any(|skip| skip == name) {
                return result(name, Verdict::Skipped, "skipped on the command line".to_owned());
            }
            let (verdict, reason) = match name {
                "ipvs_available" => ipvs_available(facts),
                "schedulers_available" => schedulers_available(input, facts),
                "vips_present" => vips_present(input, facts),
                "conn_table_size" => conn_table_size(input, facts),
                "service_conflicts" => service_conflicts(input),
                "vs_sysctls" => vs_sysctls(input, facts),
                "sync" => sync(input, facts),
                _ => unreachable!("every name in CHECK_NAMES has a check"),
            };
            result(name, verdict, reason)
        })
        .collect();
    Report { checks }
}

fn result(name: &'static str, verdict: Verdict, reason: String) -> CheckResult {
    CheckResult { name, verdict, reason }
}

fn ipvs_available(facts: &NodeFacts) -> (Verdict, String) {
    match &facts.ipvs {
        Ok(info) => (
            Verdict::Pass,
            format!(
                "IPVS {} answers over generic netlink; connection table {} buckets",
                info.version_string(),
                info.connection_table_size
            ),
        ),
        Err(why) => (Verdict::Fail, format!("IPVS is not available ({why}); load it with `modprobe ip_vs`")),
    }
}

fn schedulers_available(input: &CheckInput<'_>, facts: &NodeFacts) -> (Verdict, String) {
    let wanted: BTreeSet<&str> = input.desired.values().map(|service| service.scheduler.as_str()).collect();
    if wanted.is_empty() {
        return (Verdict::Pass, "no services configured".to_owned());
    }
    if facts.available_modules.is_empty() && facts.loaded_modules.is_empty() {
        return (
            Verdict::Warn,
            format!("cannot list kernel modules; not verified: {}", join(wanted.iter().copied())),
        );
    }
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|scheduler| {
            let module = format!("ip_vs_{scheduler}");
            !facts.loaded_modules.contains(&module) && !facts.available_modules.contains(&module)
        })
        .collect();
    if missing.is_empty() {
        // The kernel loads ip_vs_<name> itself when a service first names the scheduler.
        (Verdict::Pass, format!("loaded or loadable: {}", join(wanted.iter().copied())))
    } else {
        (Verdict::Fail, format!("no kernel module for scheduler(s) {}", join(missing.iter().copied())))
    }
}

fn vips_present(input: &CheckInput<'_>, facts: &NodeFacts) -> (Verdict, String) {
    let vips: BTreeSet<std::net::IpAddr> = input.desired.keys().filter_map(ServiceKey::vip).collect();
    if vips.is_empty() {
        return (Verdict::Pass, "no address-based services".to_owned());
    }
    let mut missing = Vec::new();
    let mut elsewhere = Vec::new();
    for vip in &vips {
        match facts.addresses.get(vip) {
            None => missing.push(vip.to_string()),
            Some(holders)
                if !input.interfaces.is_empty() && !holders.iter().any(|i| input.interfaces.contains(i)) =>
            {
                elsewhere.push(format!("{vip} (on {})", holders.join(", ")))
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        let absent = format!(
            "{} of {} VIPs are on no interface of this node: {}",
            missing.len(),
            vips.len(),
            join(missing.iter().map(String::as_str))
        );
        // A standby of an HA pair holds no VIP until VRRP moves them to it at failover.
        if input.sync.is_some() {
            return (
                Verdict::Warn,
                format!("{absent}; with sync: this node may be a standby, which VRRP gives them at failover"),
            );
        }
        return (Verdict::Fail, format!("{absent}; IPVS only sees traffic to local addresses"));
    }
    if !elsewhere.is_empty() {
        return (
            Verdict::Warn,
            format!(
                "VIPs present but not on the configured interface(s) {}: {}",
                input.interfaces.join(", "),
                join(elsewhere.iter().map(String::as_str))
            ),
        );
    }
    (Verdict::Pass, format!("all {} VIPs are present on this node", vips.len()))
}

fn conn_table_size(input: &CheckInput<'_>, facts: &NodeFacts) -> (Verdict, String) {
    let Ok(info) = &facts.ipvs else {
        return (Verdict::Warn, "not checked: IPVS is not available".to_owned());
    };
    let buckets = u64::from(info.connection_table_size.max(1));
    let Some(expected) = input.expected_connections else {
        return (Verdict::Pass, format!("{buckets} buckets (no expected connection count configured)"));
    };
    let average = expected.div_ceil(buckets);
    if average > MAX_AVERAGE_CHAIN {
        (
            Verdict::Warn,
            format!(
                "{expected} expected connections over {buckets} buckets is {average} per bucket; \
                 lookups slow down: raise the ip_vs module parameter conn_tab_bits"
            ),
        )
    } else {
        (
            Verdict::Pass,
            format!("{expected} expected connections over {buckets} buckets ({average} per bucket)"),
        )
    }
}

/// A backend that is itself a VIP:port of a service on this node sends traffic around in a loop.
fn service_conflicts(input: &CheckInput<'_>) -> (Verdict, String) {
    let mut loops = Vec::new();
    for service in input.desired.values() {
        let protocol = match service.key {
            ServiceKey::Addr { protocol, .. } => protocol,
            ServiceKey::Fwmark { .. } => continue,
        };
        for dest in service.destinations.keys() {
            let as_service = ServiceKey::Addr { protocol, addr: dest.addr, port: dest.port };
            if input.desired.contains_key(&as_service) {
                loops.push(format!("{} -> {dest}", service.key));
            }
        }
    }
    if loops.is_empty() {
        (Verdict::Pass, format!("{} services, no backend is itself a VIP", input.desired.len()))
    } else {
        (
            Verdict::Fail,
            format!(
                "backends that are VIPs of this node (a loop): {}",
                join(loops.iter().map(String::as_str))
            ),
        )
    }
}

/// Where the observed behaviour under each setting is written down.
const BEHAVIOR_DOC: &str = "docs/connection-behavior.md";

/// Reports the sysctls that decide what happens to existing connections; warns for the one
/// combination the behaviour doc recommends against: UDP services with `expire_nodest_conn=0`,
/// under which a UDP flow to a removed backend is dropped until its IPVS entry times out.
fn vs_sysctls(input: &CheckInput<'_>, facts: &NodeFacts) -> (Verdict, String) {
    let sysctls = match &facts.vs_sysctls {
        Ok(sysctls) => *sysctls,
        Err(why) => {
            return (Verdict::Warn, format!("cannot read the IPVS sysctls ({why}); see {BEHAVIOR_DOC}"));
        }
    };
    let values = format!(
        "expire_nodest_conn={} expire_quiescent_template={} conn_reuse_mode={}",
        sysctls.expire_nodest_conn, sysctls.expire_quiescent_template, sysctls.conn_reuse_mode
    );
    let udp = input
        .desired
        .keys()
        .filter(|key| matches!(key, ServiceKey::Addr { protocol: crate::model::Protocol::Udp, .. }))
        .count();
    if udp > 0 && sysctls.expire_nodest_conn == 0 {
        (
            Verdict::Warn,
            format!(
                "{values}: with {udp} UDP service(s), a flow to a removed backend is dropped until its \
                 IPVS entry times out; set net.ipv4.vs.expire_nodest_conn=1 (see {BEHAVIOR_DOC})"
            ),
        )
    } else {
        (Verdict::Pass, format!("{values} (behaviour under these settings: {BEHAVIOR_DOC})"))
    }
}

/// The sync version both nodes of a pair must speak: 1 (since Linux 2.6.39) carries IPv6 and
/// persistence engine data; a version-1 backup takes in version 0 messages too, not the reverse.
const SYNC_VERSION: u32 = 1;

/// With `sync:` configured: its interface exists on the node, and the kernel sends sync messages
/// of version 1, the one both nodes of a pair must speak.
fn sync(input: &CheckInput<'_>, facts: &NodeFacts) -> (Verdict, String) {
    let Some(sync) = input.sync else {
        return (
            Verdict::Skipped,
            "sync: is not configured; LibraFlux leaves the sync daemons alone".to_owned(),
        );
    };
    if !facts.links.contains(&sync.interface) {
        return (
            Verdict::Fail,
            format!(
                "sync.interface {} does not exist on this node; the sync daemon cannot start on it",
                sync.interface
            ),
        );
    }
    match &facts.sync_version {
        Ok(version) if *version == SYNC_VERSION => (
            Verdict::Pass,
            format!("interface {} exists; net.ipv4.vs.sync_version={SYNC_VERSION}", sync.interface),
        ),
        Ok(version) => (
            Verdict::Fail,
            format!(
                "net.ipv4.vs.sync_version is {version}; both nodes of a pair must send version {SYNC_VERSION}: \
                 sysctl -w net.ipv4.vs.sync_version={SYNC_VERSION} (and set it in /etc/sysctl.d/)"
            ),
        ),
        Err(why) => (Verdict::Warn, format!("cannot read net.ipv4.vs.sync_version ({why})")),
    }
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    let mut text = items.iter().take(NAMED_IN_REASON).copied().collect::<Vec<_>>().join(", ");
    if items.len() > NAMED_IN_REASON {
        text.push_str(&format!(" and {} more", items.len() - NAMED_IN_REASON));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{
        ipvs::Info,
        model::{Destination, Forwarding},
        preflight::VsSysctls,
    };

    fn service(key: &str, scheduler: &str, backends: &[&str]) -> (ServiceKey, Service) {
        let key: ServiceKey = key.parse().unwrap();
        let dests = backends.iter().map(|text| Destination::new(text.parse().unwrap(), 1, Forwarding::Nat));
        (key, Service::new(key, scheduler).with_destinations(dests))
    }

    fn healthy_node() -> NodeFacts {
        NodeFacts {
            ipvs: Ok(Info { version: 0x0001_0201, connection_table_size: 4096 }),
            addresses: [("10.0.0.1".parse::<IpAddr>().unwrap(), vec!["eth0".to_owned()])]
                .into_iter()
                .collect(),
            links: ["lo".to_owned(), "eth0".to_owned(), "eth1".to_owned()].into_iter().collect(),
            loaded_modules: ["ip_vs".to_owned(), "ip_vs_wrr".to_owned()].into_iter().collect(),
            available_modules: ["ip_vs_rr".to_owned(), "ip_vs_mh".to_owned()].into_iter().collect(),
            vs_sysctls: Ok(VsSysctls {
                expire_nodest_conn: 1,
                expire_quiescent_template: 0,
                conn_reuse_mode: 1,
            }),
            sync_version: Ok(1),
        }
    }

    fn check(desired: &BTreeMap<ServiceKey, Service>, facts: &NodeFacts, expected: Option<u64>) -> Report {
        let interfaces = ["eth0".to_owned()];
        let sync = sync_config("eth1");
        let input = CheckInput {
            desired,
            interfaces: &interfaces,
            expected_connections: expected,
            skip: &[],
            sync: Some(&sync),
        };
        run_checks(&input, facts)
    }

    fn outcome(report: &Report, name: &str) -> (Verdict, String) {
        let check = report.checks.iter().find(|check| check.name == name).unwrap();
        (check.verdict, check.reason.clone())
    }

    #[test]
    fn a_healthy_node_passes_every_check() {
        let desired = BTreeMap::from([service("tcp:10.0.0.1:80", "wrr", &["10.0.1.1:80"])]);
        let report = check(&desired, &healthy_node(), Some(1000));
        assert!(report.passed(), "{}", report.render_text());
        assert!(report.checks.iter().all(|check| check.verdict == Verdict::Pass), "{}", report.render_text());
        assert_eq!(report.checks.len(), CHECK_NAMES.len());
    }

    #[test]
    fn missing_ipvs_fails_with_the_modprobe_hint() {
        let facts = NodeFacts { ipvs: Err("family IPVS not found".to_owned()), ..healthy_node() };
        let report = check(&BTreeMap::new(), &facts, None);
        let (verdict, reason) = outcome(&report, "ipvs_available");
        assert_eq!(verdict, Verdict::Fail);
        assert!(reason.contains("modprobe ip_vs"), "{reason}");
        assert!(!report.passed());
    }

    #[test]
    fn an_unknown_scheduler_module_fails() {
        let desired = BTreeMap::from([service("tcp:10.0.0.1:80", "foo", &[])]);
        let (verdict, reason) = outcome(&check(&desired, &healthy_node(), None), "schedulers_available");
        assert_eq!(verdict, Verdict::Fail);
        assert_eq!(reason, "no kernel module for scheduler(s) foo");
    }

    #[test]
    fn a_loadable_but_unloaded_scheduler_passes() {
        let desired = BTreeMap::from([service("tcp:10.0.0.1:80", "mh", &[])]);
        assert_eq!(outcome(&check(&desired, &healthy_node(), None), "schedulers_available").0, Verdict::Pass);
    }

    #[test]
    fn a_vip_missing_from_the_node_fails_and_is_named() {
        let desired = BTreeMap::from([
            service("tcp:10.0.0.1:80", "wrr", &[]),
            service("udp:10.0.0.9:53", "wrr", &[]),
            service("fwmark:7", "wrr", &[]),
        ]);
        // With sync: (which `check` gives), the node may be a standby: a warning.
        let (verdict, reason) = outcome(&check(&desired, &healthy_node(), None), "vips_present");
        assert_eq!(verdict, Verdict::Warn);
        assert!(reason.starts_with("1 of 2 VIPs are on no interface of this node: 10.0.0.9"), "{reason}");
        assert!(reason.ends_with("which VRRP gives them at failover"), "{reason}");
        let interfaces = ["eth0".to_owned()];
        let input = CheckInput {
            desired: &desired,
            interfaces: &interfaces,
            expected_connections: None,
            skip: &[],
            sync: None,
        };
        let (verdict, reason) = outcome(&run_checks(&input, &healthy_node()), "vips_present");
        assert_eq!(verdict, Verdict::Fail);
        assert!(reason.starts_with("1 of 2 VIPs are on no interface of this node: 10.0.0.9"), "{reason}");
        assert!(reason.ends_with("IPVS only sees traffic to local addresses"), "{reason}");
    }

    #[test]
    fn a_vip_on_another_interface_warns() {
        let mut facts = healthy_node();
        facts.addresses.insert("10.0.0.1".parse().unwrap(), vec!["lo".to_owned()]);
        let desired = BTreeMap::from([service("tcp:10.0.0.1:80", "wrr", &[])]);
        let (verdict, reason) = outcome(&check(&desired, &facts, None), "vips_present");
        assert_eq!(verdict, Verdict::Warn);
        assert!(reason.contains("10.0.0.1 (on lo)"), "{reason}");
    }

    #[test]
    fn a_small_connection_table_for_the_expected_load_warns() {
        let (verdict, reason) =
            outcome(&check(&BTreeMap::new(), &healthy_node(), Some(4096 * 9)), "conn_table_size");
        assert_eq!(verdict, Verdict::Warn);
        assert!(reason.contains("9 per bucket"), "{reason}");
        let (verdict, _) =
            outcome(&check(&BTreeMap::new(), &healthy_node(), Some(4096 * 8)), "conn_table_size");
        assert_eq!(verdict, Verdict::Pass);
    }

    #[test]
    fn a_backend_that_is_a_vip_of_the_node_is_a_loop() {
        let desired = BTreeMap::from([
            service("tcp:10.0.0.1:80", "wrr", &["10.0.0.1:8080"]),
            service("tcp:10.0.0.1:8080", "wrr", &["10.0.1.1:80"]),
        ]);
        let (verdict, reason) = outcome(&check(&desired, &healthy_node(), None), "service_conflicts");
        assert_eq!(verdict, Verdict::Fail);
        assert!(reason.contains("tcp:10.0.0.1:80 -> 10.0.0.1:8080"), "{reason}");
    }

    #[test]
    fn skipped_checks_are_reported_and_do_not_fail() {
        let facts = NodeFacts { ipvs: Err("gone".to_owned()), ..healthy_node() };
        let skip = ["ipvs_available".to_owned(), "conn_table_size".to_owned()];
        let input = CheckInput {
            desired: &BTreeMap::new(),
            interfaces: &[],
            expected_connections: None,
            skip: &skip,
            sync: None,
        };
        let report = run_checks(&input, &facts);
        assert_eq!(outcome(&report, "ipvs_available").0, Verdict::Skipped);
        assert!(report.passed());
    }

    #[test]
    fn vs_sysctls_are_reported_with_the_doc() {
        let desired = BTreeMap::from([service("tcp:10.0.0.1:80", "wrr", &[])]);
        let (verdict, reason) = outcome(&check(&desired, &healthy_node(), None), "vs_sysctls");
        assert_eq!(verdict, Verdict::Pass);
        assert_eq!(
            reason,
            "expire_nodest_conn=1 expire_quiescent_template=0 conn_reuse_mode=1 \
             (behaviour under these settings: docs/connection-behavior.md)"
        );
    }

    #[test]
    fn udp_services_with_expire_nodest_conn_0_warn() {
        let mut facts = healthy_node();
        facts.vs_sysctls =
            Ok(VsSysctls { expire_nodest_conn: 0, expire_quiescent_template: 0, conn_reuse_mode: 1 });
        let tcp_only = BTreeMap::from([service("tcp:10.0.0.1:80", "wrr", &[])]);
        assert_eq!(outcome(&check(&tcp_only, &facts, None), "vs_sysctls").0, Verdict::Pass);
        let with_udp =
            BTreeMap::from([service("tcp:10.0.0.1:80", "wrr", &[]), service("udp:10.0.0.1:53", "wrr", &[])]);
        let (verdict, reason) = outcome(&check(&with_udp, &facts, None), "vs_sysctls");
        assert_eq!(verdict, Verdict::Warn);
        assert!(reason.contains("with 1 UDP service(s)"), "{reason}");
        assert!(reason.contains("expire_nodest_conn=1 (see docs/connection-behavior.md)"), "{reason}");
    }

    #[test]
    fn unreadable_vs_sysctls_warn() {
        let facts = NodeFacts { vs_sysctls: Err("/proc/sys/net/ipv4/vs: gone".to_owned()), ..healthy_node() };
        let (verdict, reason) = outcome(&check(&BTreeMap::new(), &facts, None), "vs_sysctls");
        assert_eq!(verdict, Verdict::Warn);
        assert!(reason.starts_with("cannot read the IPVS sysctls (/proc/sys/net/ipv4/vs: gone)"), "{reason}");
    }

    #[test]
    fn every_check_runs_once_in_order() {
        let report = check(&BTreeMap::new(), &healthy_node(), None);
        let names: Vec<&str> = report.checks.iter().map(|check| check.name).collect();
        assert_eq!(names, CHECK_NAMES);
        assert_eq!(names.len(), 7);
    }

    fn sync_config(interface: &str) -> SyncConfig {
        crate::config::sync::example(interface, crate::ipvs::SyncState::Backup)
    }

    #[test]
    fn sync_needs_its_interface_and_version_1_and_is_skipped_without_sync() {
        let (verdict, reason) = outcome(&check(&BTreeMap::new(), &healthy_node(), None), "sync");
        assert_eq!(
            (verdict, reason.as_str()),
            (Verdict::Pass, "interface eth1 exists; net.ipv4.vs.sync_version=1")
        );
        let facts = NodeFacts { sync_version: Ok(0), ..healthy_node() };
        let (verdict, reason) = outcome(&check(&BTreeMap::new(), &facts, None), "sync");
        assert_eq!(verdict, Verdict::Fail);
        assert!(reason.contains("sysctl -w net.ipv4.vs.sync_version=1"), "{reason}");
        let facts = NodeFacts { links: ["lo".to_owned()].into_iter().collect(), ..healthy_node() };
        let (verdict, reason) = outcome(&check(&BTreeMap::new(), &facts, None), "sync");
        assert_eq!(verdict, Verdict::Fail);
        assert!(reason.starts_with("sync.interface eth1 does not exist on this node"), "{reason}");
        let input = CheckInput {
            desired: &BTreeMap::new(),
            interfaces: &[],
            expected_connections: None,
            skip: &[],
            sync: None,
        };
        let report = run_checks(&input, &healthy_node());
        let (verdict, reason) = outcome(&report, "sync");
        assert_eq!(verdict, Verdict::Skipped);
        assert_eq!(reason, "sync: is not configured; LibraFlux leaves the sync daemons alone");
        assert!(report.passed());
    }

    /// `preflight --output json` prints the report as it serialises: every check in order, each
    /// with its name, lower-case verdict and reason (docs/operations.md).
    #[test]
    fn the_report_as_json_has_every_check_in_order() {
        let facts = NodeFacts { ipvs: Err("family IPVS not found".to_owned()), ..healthy_node() };
        let report = check(&BTreeMap::new(), &facts, None);
        let value = serde_json::to_value(&report).unwrap();
        let checks = value["checks"].as_array().unwrap();
        let names: Vec<&str> = checks.iter().map(|check| check["name"].as_str().unwrap()).collect();
        assert_eq!(names, CHECK_NAMES);
        for check in checks {
            assert_eq!(check.as_object().unwrap().len(), 3, "{check}");
            assert!(
                ["pass", "warn", "fail", "skipped"].contains(&check["verdict"].as_str().unwrap()),
                "{check}"
            );
            assert!(check["reason"].is_string(), "{check}");
        }
        assert_eq!(checks[0]["verdict"], "fail");
        assert_eq!(value.as_object().unwrap().len(), 1, "{value}");
    }
}
