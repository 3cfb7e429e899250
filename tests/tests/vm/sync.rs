//! The kernel's IPVS connection sync daemon (issue 17, HA pairs), on real IPVS: what our client
//! starts, `ipvsadm --list --daemon` shows exactly and what ipvsadm starts, our client reads
//! exactly; the kernel's refusals name the operation and the interface.

use libraflux::ipvs::{SyncDaemon, SyncState};
use libraflux_tests::NetNs;

use super::support::with_client;

/// The interface the sync daemons of these tests use: a dummy link with an IPv4 address (a
/// master binds its socket to the interface's address).
const IFACE: &str = "lfsync0";

fn sync_node(role: &str) -> NetNs {
    let netns = NetNs::new(role);
    netns.ip(&["link", "add", IFACE, "type", "dummy"]);
    netns.ip(&["addr", "add", "10.230.0.1/24", "dev", IFACE]);
    netns.ip(&["link", "set", IFACE, "up"]);
    netns
}

/// `ipvsadm --list --daemon`, one line per daemon.
fn ipvsadm_daemons(netns: &NetNs) -> Vec<String> {
    netns.exec("ipvsadm", &["--list", "--daemon"]).lines().map(str::to_owned).collect()
}

fn daemons(netns: &NetNs) -> Vec<SyncDaemon> {
    with_client(netns, |mut client| async move { client.sync_daemons().await.expect("listing sync daemons") })
}

fn start(netns: &NetNs, daemon: &SyncDaemon) -> Result<(), libraflux::ipvs::IpvsError> {
    let daemon = daemon.clone();
    with_client(netns, move |mut client| async move { client.start_sync_daemon(&daemon).await })
}

fn stop(netns: &NetNs, state: SyncState) -> Result<(), libraflux::ipvs::IpvsError> {
    with_client(netns, move |mut client| async move { client.stop_sync_daemon(state).await })
}

fn daemon(state: SyncState, sync_id: u8) -> SyncDaemon {
    SyncDaemon {
        state,
        interface: IFACE.to_owned(),
        sync_id,
        group: None,
        port: None,
        ttl: None,
        max_len: None,
    }
}

/// The UDP ports the namespace's sockets are bound to, from /proc/net/udp and /proc/net/udp6:
/// the kernel's own view of where a backup listens, which owes nothing to netlink.
fn bound_udp_ports(netns: &NetNs) -> Vec<u16> {
    let mut ports: Vec<u16> = ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .flat_map(|table| netns.exec("cat", &[table]).lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|line| {
            let local = line.split_whitespace().nth(1)?;
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect();
    ports.sort_unstable();
    ports
}

#[test]
fn the_client_starts_lists_and_stops_sync_daemons_as_ipvsadm_sees_them() {
    let netns = sync_node("sync-client");
    assert!(daemons(&netns).is_empty(), "a fresh namespace runs no sync daemon");

    // Every parameter given: ipvsadm shows exactly those.
    let master = SyncDaemon {
        group: Some("239.1.2.3".parse().unwrap()),
        port: Some(8850),
        ttl: Some(3),
        max_len: Some(1400),
        ..daemon(SyncState::Master, 7)
    };
    start(&netns, &master).expect("starting the master");
    assert_eq!(
        ipvsadm_daemons(&netns),
        ["master sync daemon (mcast=lfsync0, syncid=7, maxlen=1400, group=239.1.2.3, port=8850, ttl=3)"]
    );
    assert_eq!(daemons(&netns), std::slice::from_ref(&master));

    // None given: the kernel's defaults, which ipvsadm and our client read alike.
    let backup = daemon(SyncState::Backup, 7);
    start(&netns, &backup).expect("starting the backup beside the master");
    let backup_seen = SyncDaemon {
        group: Some("224.0.0.81".parse().unwrap()),
        port: Some(8848),
        ttl: Some(1),
        max_len: Some(1472),
        ..backup.clone()
    };
    assert_eq!(
        ipvsadm_daemons(&netns),
        [
            "master sync daemon (mcast=lfsync0, syncid=7, maxlen=1400, group=239.1.2.3, port=8850, ttl=3)",
            "backup sync daemon (mcast=lfsync0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)",
        ]
    );
    assert_eq!(daemons(&netns), [master.clone(), backup_seen.clone()]);
    assert!(backup_seen.runs_as(&backup));
    // The backup's receive socket listens on the port we sent in host order.
    assert!(bound_udp_ports(&netns).contains(&8848), "{:?}", bound_udp_ports(&netns));

    // A state that runs is refused, and the error names the operation and the interface.
    let err = start(&netns, &master).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
    assert_eq!(
        err.to_string(),
        "starting the master sync daemon on lfsync0 (syncid 7): File exists (os error 17)"
    );

    stop(&netns, SyncState::Master).expect("stopping the master");
    assert_eq!(ipvsadm_daemons(&netns), [backup_seen.to_string()]);
    assert_eq!(daemons(&netns), [backup_seen]);
    stop(&netns, SyncState::Backup).expect("stopping the backup");
    assert!(ipvsadm_daemons(&netns).is_empty(), "{:?}", ipvsadm_daemons(&netns));
    assert!(daemons(&netns).is_empty());
    let err = stop(&netns, SyncState::Backup).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ESRCH), "{err}");
    assert_eq!(err.to_string(), "stopping the backup sync daemon: No such process (os error 3)");

    // An interface that does not exist.
    let nowhere = SyncDaemon { interface: "lfnosuch0".to_owned(), ..daemon(SyncState::Master, 1) };
    let err = start(&netns, &nowhere).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
    assert_eq!(
        err.to_string(),
        "starting the master sync daemon on lfnosuch0 (syncid 1): No such device (os error 19)"
    );
    assert!(daemons(&netns).is_empty());

    // What ipvsadm starts, we read: an IPv6 group this time.
    netns.exec(
        "ipvsadm",
        &[
            "--start-daemon",
            "backup",
            "--mcast-interface",
            IFACE,
            "--syncid",
            "9",
            "--sync-maxlen",
            "1300",
            "--mcast-group",
            "ff02::1:81",
            "--mcast-port",
            "9000",
            "--mcast-ttl",
            "2",
        ],
    );
    let ipv6 = SyncDaemon {
        group: Some("ff02::1:81".parse().unwrap()),
        port: Some(9000),
        ttl: Some(2),
        max_len: Some(1300),
        ..daemon(SyncState::Backup, 9)
    };
    assert_eq!(daemons(&netns), std::slice::from_ref(&ipv6));
    assert_eq!(ipvsadm_daemons(&netns), [ipv6.to_string()]);
    netns.exec("ipvsadm", &["--stop-daemon", "backup"]);
    assert!(daemons(&netns).is_empty());
}
