//! Our netlink client against the kernel's IPVS, cross-checked with ipvsadm both ways: what we
//! write, `ipvsadm-save -n` prints exactly; what ipvsadm writes, we list exactly.

use libraflux::{
    ipvs::{Op, Timeouts},
    model::{Forwarding, Service},
};

use super::support::{
    add_ops, apply_all, dest, director, key, list, restore, saved, service, sorted, thresholds, with_client,
    with_dests,
};

/// Every scheduler Debian's 6.1 kernel ships as a module.
const SCHEDULERS: [&str; 13] =
    ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"];

/// One service per scheduler, each with one NAT destination whose weight is its index + 1.
fn scheduler_services() -> Vec<Service> {
    SCHEDULERS
        .iter()
        .enumerate()
        .map(|(index, scheduler)| {
            let n = index + 1;
            with_dests(
                service(&format!("tcp:10.10.0.{n}:80"), scheduler),
                &[dest(&format!("10.20.0.{n}:8080"), u32::try_from(n).unwrap(), Forwarding::Nat)],
            )
        })
        .collect()
}

fn scheduler_lines(services: &[Service]) -> String {
    services
        .iter()
        .enumerate()
        .map(|(index, service)| {
            let n = index + 1;
            let persistence = service.persistence.map(|timeout| format!(" -p {timeout}")).unwrap_or_default();
            let dest = service.destinations.values().next().expect("one destination");
            format!(
                "-A -t 10.10.0.{n}:80 -s {}{persistence}\n-a -t 10.10.0.{n}:80 -r 10.20.0.{n}:8080 -m -w {}\n",
                service.scheduler, dest.weight
            )
        })
        .collect()
}

/// Persistence with a /24 netmask, NAT/DR/tunnel destinations, thresholds.
fn persistent_service() -> Service {
    let mut nat = dest("10.21.0.2:8080", 3, Forwarding::Nat);
    nat.upper_threshold = 100;
    nat.lower_threshold = 10;
    let mut service = with_dests(
        service("tcp:10.11.0.1:80", "wrr"),
        &[nat, dest("10.21.0.3:80", 0, Forwarding::Dr), dest("10.21.0.4:80", 2, Forwarding::Tunnel)],
    );
    service.persistence = Some(300);
    service.persistence_netmask = Some(24);
    service
}

fn other_services() -> Vec<Service> {
    let mut v6 = with_dests(service("tcp:[fd00::1]:443", "sh"), &[dest("[fd00::2]:443", 1, Forwarding::Nat)]);
    v6.persistence = Some(60);
    v6.persistence_netmask = Some(64);
    let udp6 = with_dests(service("udp:[fd00::1]:53", "rr"), &[dest("[fd00::3]:53", 2, Forwarding::Dr)]);
    let mark = with_dests(service("fwmark:7", "rr"), &[dest("10.21.0.9:0", 1, Forwarding::Dr)]);
    let mut mark6 = with_dests(service("fwmark:8:v6", "lc"), &[dest("[fd00::9]:0", 4, Forwarding::Tunnel)]);
    mark6.persistence = Some(30);
    let sctp = service("sctp:10.12.0.1:9", "rr");
    vec![persistent_service(), v6, udp6, mark, mark6, sctp]
}

#[test]
fn what_we_write_ipvsadm_save_reads_back_exactly() {
    let netns = director("write");
    let mut services = scheduler_services();
    services.extend(other_services());
    apply_all(&netns, add_ops(&services));

    let expected = scheduler_lines(&scheduler_services())
        + "-A -t 10.11.0.1:80 -s wrr -p 300 -M 255.255.255.0\n\
           -a -t 10.11.0.1:80 -r 10.21.0.2:8080 -m -w 3\n\
           -a -t 10.11.0.1:80 -r 10.21.0.3:80 -g -w 0\n\
           -a -t 10.11.0.1:80 -r 10.21.0.4:80 -i -w 2 --tun-type ipip\n\
           -A --sctp-service 10.12.0.1:9 -s rr\n\
           -A -t [fd00::1]:443 -s sh -p 60 -M 64\n\
           -a -t [fd00::1]:443 -r [fd00::2]:443 -m -w 1\n\
           -A -u [fd00::1]:53 -s rr\n\
           -a -u [fd00::1]:53 -r [fd00::3]:53 -g -w 2\n\
           -A -f 7 -s rr\n\
           -a -f 7 -r 10.21.0.9:0 -g -w 1\n\
           -A -f 8 -6 -s lc -p 30\n\
           -a -f 8 -6 -r [fd00::9]:0 -i -w 4 --tun-type ipip\n";
    assert_eq!(saved(&netns), libraflux_tests::sorted_lines(&expected), "ipvsadm-save after adding");
    let nat_thresholds = ("10.21.0.2:8080".to_owned(), 100, 10);
    assert!(thresholds(&netns).contains(&nat_thresholds), "{:?}", thresholds(&netns));
    assert_eq!(list(&netns), sorted(services.clone()), "our listing after adding");

    // Update: scheduler and persistence, persistence off, weight and forwarding both ways.
    let mut first = services[0].clone();
    first.scheduler = "wlc".into();
    first.persistence = Some(120);
    let mut persistent = persistent_service();
    persistent.persistence = None;
    persistent.persistence_netmask = None;
    let mut nat_to_dr = persistent.destinations[&super::support::dest_key("10.21.0.2:8080")];
    (nat_to_dr.weight, nat_to_dr.forwarding) = (7, Forwarding::Dr);
    let mut dr_to_tunnel = dest("10.21.0.3:80", 5, Forwarding::Tunnel);
    dr_to_tunnel.upper_threshold = 50;
    let tunnel_to_nat = dest("10.21.0.4:80", 9, Forwarding::Nat);
    apply_all(
        &netns,
        vec![
            Op::UpdateService(first.clone()),
            Op::UpdateService(persistent.clone()),
            Op::UpdateDest(persistent.key, nat_to_dr),
            Op::UpdateDest(persistent.key, dr_to_tunnel),
            Op::UpdateDest(persistent.key, tunnel_to_nat),
        ],
    );
    let mut updated_schedulers = scheduler_services();
    updated_schedulers[0] = first;
    let after_update = scheduler_lines(&updated_schedulers)
        + "-A -t 10.11.0.1:80 -s wrr\n\
           -a -t 10.11.0.1:80 -r 10.21.0.2:8080 -g -w 7\n\
           -a -t 10.11.0.1:80 -r 10.21.0.3:80 -i -w 5 --tun-type ipip\n\
           -a -t 10.11.0.1:80 -r 10.21.0.4:80 -m -w 9\n";
    let rest = expected.split_once("-A --sctp-service").map(|(_, rest)| rest).expect("sctp line");
    let after_update = after_update + "-A --sctp-service" + rest;
    assert_eq!(saved(&netns), libraflux_tests::sorted_lines(&after_update), "ipvsadm-save after updating");
    let updated_thresholds = thresholds(&netns);
    assert!(updated_thresholds.contains(&nat_thresholds), "{updated_thresholds:?}");
    assert!(updated_thresholds.contains(&("10.21.0.3:80".to_owned(), 50, 0)), "{updated_thresholds:?}");

    // Delete a destination and two services.
    apply_all(
        &netns,
        vec![
            Op::DeleteDest(persistent.key, super::support::dest_key("10.21.0.4:80")),
            Op::DeleteService(key("udp:[fd00::1]:53")),
            Op::DeleteService(key("fwmark:7")),
        ],
    );
    let after_delete = after_update
        .replace("-a -t 10.11.0.1:80 -r 10.21.0.4:80 -m -w 9\n", "")
        .replace("-A -u [fd00::1]:53 -s rr\n-a -u [fd00::1]:53 -r [fd00::3]:53 -g -w 2\n", "")
        .replace("-A -f 7 -s rr\n-a -f 7 -r 10.21.0.9:0 -g -w 1\n", "");
    assert_ne!(after_delete, after_update, "the expectation itself changed");
    assert_eq!(saved(&netns), libraflux_tests::sorted_lines(&after_delete), "ipvsadm-save after deleting");
    let listed = list(&netns);
    assert_eq!(listed.len(), services.len() - 2);
    let persistent_listed = listed.iter().find(|service| service.key == persistent.key).expect("listed");
    assert_eq!(
        persistent_listed.destinations.values().copied().collect::<Vec<_>>(),
        [nat_to_dr, dr_to_tunnel],
        "our listing after deleting"
    );
}

#[test]
fn what_ipvsadm_writes_we_read_back_exactly() {
    let netns = director("read");
    restore(
        &netns,
        "-A -t 10.40.0.1:8443 -s wrr -p 600 -M 255.255.0.0\n\
         -a -t 10.40.0.1:8443 -r 10.41.0.1:9443 -m -w 5 -x 1000 -y 100\n\
         -a -t 10.40.0.1:8443 -r 10.41.0.2:8443 -g -w 0\n\
         -a -t 10.40.0.1:8443 -r 10.41.0.3:8443 -i -w 65535\n\
         -A -u 10.40.0.2:53 -s mh\n\
         -A -t [fd00:40::1]:80 -s lblcr -p 10 -M 48\n\
         -a -t [fd00:40::1]:80 -r [fd00:41::1]:8080 -m -w 2\n\
         -A -f 4660 -s sed\n\
         -a -f 4660 -r 10.41.0.9:0 -g -w 3\n\
         -A -f 9 -6 -s nq -p 5\n\
         -a -f 9 -6 -r [fd00:41::9]:0 -i -w 1\n",
    );
    let mut tcp = with_dests(
        service("tcp:10.40.0.1:8443", "wrr"),
        &[
            dest("10.41.0.1:9443", 5, Forwarding::Nat),
            dest("10.41.0.2:8443", 0, Forwarding::Dr),
            dest("10.41.0.3:8443", 65535, Forwarding::Tunnel),
        ],
    );
    tcp.persistence = Some(600);
    tcp.persistence_netmask = Some(16);
    let nat = tcp.destinations.get_mut(&super::support::dest_key("10.41.0.1:9443")).expect("nat");
    (nat.upper_threshold, nat.lower_threshold) = (1000, 100);
    let mut v6 =
        with_dests(service("tcp:[fd00:40::1]:80", "lblcr"), &[dest("[fd00:41::1]:8080", 2, Forwarding::Nat)]);
    v6.persistence = Some(10);
    v6.persistence_netmask = Some(48);
    let mark = with_dests(service("fwmark:4660", "sed"), &[dest("10.41.0.9:0", 3, Forwarding::Dr)]);
    let mut mark6 =
        with_dests(service("fwmark:9:v6", "nq"), &[dest("[fd00:41::9]:0", 1, Forwarding::Tunnel)]);
    mark6.persistence = Some(5);
    let expected = sorted(vec![tcp, service("udp:10.40.0.2:53", "mh"), v6, mark, mark6]);
    assert_eq!(list(&netns), expected);
}

#[test]
fn timeouts_round_trip_with_ipvsadm_both_ways() {
    let netns = director("timeouts");
    let fresh = with_client(&netns, |mut client| async move { client.read_timeouts().await.expect("read") });
    assert_eq!(fresh, Timeouts { tcp: 900, tcp_fin: 120, udp: 300 }, "kernel defaults");

    with_client(&netns, |mut client| async move {
        client.write_timeouts(Timeouts { tcp: 1000, tcp_fin: 20, udp: 30 }).await.expect("set");
    });
    assert_eq!(netns.exec("ipvsadm", &["-Ln", "--timeout"]), "Timeout (tcp tcpfin udp): 1000 20 30\n");

    // 0 leaves a timeout unchanged.
    with_client(&netns, |mut client| async move {
        client.write_timeouts(Timeouts { tcp: 0, tcp_fin: 0, udp: 45 }).await.expect("set");
    });
    assert_eq!(netns.exec("ipvsadm", &["-Ln", "--timeout"]), "Timeout (tcp tcpfin udp): 1000 20 45\n");

    netns.exec("ipvsadm", &["--set", "200", "40", "60"]);
    let read = with_client(&netns, |mut client| async move { client.read_timeouts().await.expect("read") });
    assert_eq!(read, Timeouts { tcp: 200, tcp_fin: 40, udp: 60 });
}

#[test]
fn info_matches_the_ipvsadm_header() {
    let netns = director("info");
    let info = with_client(&netns, |mut client| async move { client.read_info().await.expect("GET_INFO") });
    assert_eq!(info.connection_table_size, 4096, "the default ip_vs conn_tab_bits=12");
    let listing = netns.exec("ipvsadm", &["-Ln"]);
    let header = listing.lines().next().expect("a header line");
    assert_eq!(
        header,
        format!("IP Virtual Server version {} (size={})", info.version_string(), info.connection_table_size)
    );
    assert_eq!(info.version_string(), "1.2.1");
}
