//! The kernel's IPVS connection sync daemon (issue 17, HA pairs), on real IPVS: what our client
//! starts, `ipvsadm --list --daemon` shows exactly and what ipvsadm starts, our client reads
//! exactly; the kernel's refusals name the operation and the interface. `libraflux sync` with no
//! daemon programs the kernel from the config; the daemon starts `start_as`, switches role on
//! `libraflux sync master`, leaves the sync daemon running on SIGTERM, keeps its role across a
//! restart and stops it when a reload removes `sync:`.

use std::time::Duration;

use libraflux::ipvs::{
    SyncDaemon, SyncState,
    packet::{IpvsAttr, IpvsCmd, IpvsMessage, daemon_from_attrs},
};
use libraflux_tests::NetNs;

use super::{
    control::stop as stop_daemon,
    daemon::{CONFIG, Daemon},
    daemon_reload::{metric, wait_for},
    ipvs_capture::{RawIpvs, ipvs_messages},
    support::{Node, with_client},
};

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

/// The kernel's GET_DAEMON dump of what ipvsadm started decodes to it; with
/// `LIBRAFLUX_WRITE_FIXTURES=DIR` its bytes are written to DIR as the packet layer's fixture
/// `get_daemon_dump_reply.bin` (libraflux/src/ipvs/packet/fixtures/README.md).
#[test]
fn the_kernels_daemon_dump_decodes_and_can_be_captured_as_a_fixture() {
    let netns = sync_node("sync-capture");
    let master = [
        "--start-daemon",
        "master",
        "--mcast-interface",
        IFACE,
        "--syncid",
        "7",
        "--sync-maxlen",
        "1400",
        "--mcast-group",
        "239.1.2.3",
        "--mcast-port",
        "8850",
        "--mcast-ttl",
        "3",
    ];
    netns.exec("ipvsadm", &master);
    netns.exec(
        "ipvsadm",
        &["--start-daemon", "backup", "--mcast-interface", IFACE, "--mcast-group", "ff02::1:81"],
    );
    let reply = netns.enter(|| {
        let dump = IpvsMessage::new(IpvsCmd::GetDaemon, vec![]);
        RawIpvs::open().request(netlink_packet_core::NLM_F_REQUEST | netlink_packet_core::NLM_F_DUMP, dump)
    });
    let daemons: Vec<SyncDaemon> = ipvs_messages(&reply)
        .into_iter()
        .inspect(|message| assert_eq!(message.cmd, IpvsCmd::NewDaemon))
        .flat_map(|message| message.attrs)
        .map(|attr| match attr {
            IpvsAttr::Daemon(attrs) => daemon_from_attrs(&attrs).expect("a kernel sync daemon decodes"),
            other => panic!("unexpected attribute in a daemon dump: {other:?}"),
        })
        .collect();
    let expected = [
        SyncDaemon {
            group: Some("239.1.2.3".parse().unwrap()),
            port: Some(8850),
            ttl: Some(3),
            max_len: Some(1400),
            ..daemon(SyncState::Master, 7)
        },
        SyncDaemon {
            group: Some("ff02::1:81".parse().unwrap()),
            port: Some(8848),
            ttl: Some(1),
            max_len: Some(1452),
            ..daemon(SyncState::Backup, 0)
        },
    ];
    assert_eq!(daemons, expected, "ipvsadm: {:?}", ipvsadm_daemons(&netns));
    if let Some(dir) = std::env::var_os("LIBRAFLUX_WRITE_FIXTURES") {
        let path = std::path::Path::new(&dir).join("get_daemon_dump_reply.bin");
        std::fs::write(&path, &reply).unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
        eprintln!("wrote {} ({} bytes)", path.display(), reply.len());
    }
}

/// The sync daemon line `ipvsadm --list --daemon` prints for `sync:` of [`sync_config`] in `state`.
fn line(state: &str, ttl: u8) -> String {
    format!(
        "{state} sync daemon (mcast=lfsync0, syncid=5, maxlen=1472, group=224.0.0.81, port=8848, ttl={ttl})"
    )
}

/// What `libraflux sync` says it started: the daemon as sent (the kernel picks the maximum length).
fn started(state: &str, ttl: u8) -> String {
    format!(
        "Started the {state} sync daemon (mcast=lfsync0, syncid=5, group=224.0.0.81, port=8848, ttl={ttl})"
    )
}

/// A `sync:` section on [`IFACE`], sync id 5, starting as backup.
fn sync_config(ttl: u8) -> String {
    format!("sync:\n  interface: {IFACE}\n  sync_id: 5\n  ttl: {ttl}\n  start_as: backup\n")
}

/// A node (namespace with the VIP on `lfvip0`) with [`IFACE`] for the sync daemon too.
fn node_with_sync_interface() -> Node {
    let node = Node::new();
    node.netns.ip(&["link", "add", IFACE, "type", "dummy"]);
    node.netns.ip(&["addr", "add", "10.230.0.1/24", "dev", IFACE]);
    node.netns.ip(&["link", "set", IFACE, "up"]);
    node
}

#[test]
fn without_a_daemon_libraflux_sync_programs_the_kernel_from_the_config() {
    let node = node_with_sync_interface();
    let config = node.config("config.yaml", &format!("{}services: []\n", sync_config(1)));

    let master = node.libraflux(&["sync", "master", "-c", &config]);
    master.assert_code(0);
    assert!(master.stdout.starts_with("No LibraFlux daemon answers on"), "{}", master.stdout);
    assert!(master.stdout.contains(&format!("{}\n", started("master", 1))), "{}", master.stdout);
    assert_eq!(ipvsadm_daemons(&node.netns), [line("master", 1)]);
    let again = node.libraflux(&["sync", "master", "-c", &config]);
    again.assert_code(0);
    assert!(again.stdout.contains("Nothing to change."), "{}", again.stdout);

    let backup = node.libraflux(&["sync", "backup", "-c", &config]);
    backup.assert_code(0);
    let expected = format!(
        "{}\nStopped the master sync daemon\nThe kernel runs the {}.\n",
        started("backup", 1),
        line("backup", 1)
    );
    assert!(backup.stdout.ends_with(&expected), "{}", backup.stdout);
    assert_eq!(ipvsadm_daemons(&node.netns), [line("backup", 1)]);

    let status = node.libraflux(&["sync", "status"]);
    status.assert_code(0);
    assert_eq!(status.stdout, format!("The kernel runs the {}.\n", line("backup", 1)));
    let json = node.libraflux(&["sync", "status", "--output", "json"]);
    json.assert_code(0);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("sync status --output json");
    assert_eq!(value["via"], "netlink", "{value:#}");
    assert_eq!(value["daemons"][0]["state"], "backup", "{value:#}");
    assert_eq!(value["daemons"][0]["port"], 8848, "{value:#}");
    let status = node.libraflux(&["status", "--output", "json"]);
    let value: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --output json");
    assert_eq!(value["sync"][0]["interface"], IFACE, "status reads the sync daemons too: {value:#}");

    // No sync: section: refused, nothing touched.
    let plain = node.config("plain.yaml", "services: []\n");
    let refused = node.libraflux(&["sync", "master", "-c", &plain]);
    refused.assert_code(3);
    assert!(refused.stderr.contains("has no sync: section"), "{}", refused.stderr);
    // An interface the kernel does not know: refused, and the node keeps its role.
    let nowhere = node.config("nowhere.yaml", "sync:\n  interface: lfnosuch0\n  sync_id: 5\n");
    let refused = node.libraflux(&["sync", "master", "-c", &nowhere]);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains(
            "starting the master sync daemon on lfnosuch0 (syncid 5): No such device (os error 19)"
        ),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains(&format!("the kernel now runs the {}", line("backup", 1))),
        "{}",
        refused.stderr
    );
    assert_eq!(ipvsadm_daemons(&node.netns), [line("backup", 1)]);
}

#[test]
fn the_daemon_starts_switches_keeps_across_restarts_and_stops_the_sync_daemon_on_removal() {
    let node = node_with_sync_interface();
    let with_sync = |ttl| format!("{CONFIG}{}", sync_config(ttl));
    let config = node.config("config.yaml", &with_sync(1));
    let daemon = Daemon::start(&node, &config);
    assert_eq!(
        ipvsadm_daemons(&node.netns),
        [line("backup", 1)],
        "start_as, before READY:\n{}",
        daemon.log()
    );

    // keepalived's notify_master, through the daemon.
    let master = node.libraflux(&["sync", "master"]);
    master.assert_code(0);
    assert_eq!(
        master.stdout,
        format!(
            "{}\nStopped the backup sync daemon\nThe kernel runs the {}.\n",
            started("master", 1),
            line("master", 1)
        )
    );
    assert_eq!(ipvsadm_daemons(&node.netns), [line("master", 1)], "{}", daemon.log());
    let json = node.libraflux(&["sync", "status", "--output", "json"]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("sync status --output json");
    assert_eq!(
        (value["via"].as_str(), value["daemons"][0]["state"].as_str()),
        (Some("daemon"), Some("master"))
    );
    let status = node.libraflux(&["status", "--output", "json"]);
    let value: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --output json");
    assert_eq!(value["daemon"]["sync"]["configured"], true, "{value:#}");
    assert_eq!(value["daemon"]["sync"]["daemons"][0]["state"], "master", "{value:#}");
    assert!(
        node.libraflux(&["status"])
            .stdout
            .contains(&format!("sync: the kernel runs the {}\n", line("master", 1)))
    );
    let metrics = node.http_get("127.0.0.1:9469", "/metrics");
    assert_eq!(metric(&metrics, "libraflux_ipvs_sync_daemon", &["state=\"master\""]), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "libraflux_ipvs_sync_daemon", &["state=\"backup\""]), Some(0.0), "{metrics}");

    // SIGTERM leaves it running, like IPVS; a restarted daemon keeps the kernel's role.
    stop_daemon(daemon);
    assert_eq!(ipvsadm_daemons(&node.netns), [line("master", 1)]);
    let daemon = Daemon::start(&node, &config);
    assert_eq!(ipvsadm_daemons(&node.netns), [line("master", 1)], "{}", daemon.log());
    assert!(daemon.log().contains("the kernel runs it; kept, in its role"), "{}", daemon.log());

    // A reload that changes sync: restarts it in the same role with the new parameters.
    std::fs::write(
        &config,
        format!("{}\nsnapshots:\n  dir: {}\n", with_sync(2), node.snapshots_dir().display()),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(15), "the sync daemon restarted with ttl 2", &daemon, || {
        (ipvsadm_daemons(&node.netns) == [line("master", 2)]).then_some(())
    });

    // A reload that removes sync: stops it, and says so; then the daemon leaves sync alone.
    std::fs::write(&config, format!("{CONFIG}\nsnapshots:\n  dir: {}\n", node.snapshots_dir().display()))
        .unwrap();
    daemon.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(15), "the sync daemon stopped", &daemon, || {
        ipvsadm_daemons(&node.netns).is_empty().then_some(())
    });
    assert!(daemon.log().contains("sync: removed from the configuration"), "{}", daemon.log());
    let refused = node.libraflux(&["sync", "master"]);
    refused.assert_code(3);
    assert!(refused.stderr.contains("sync: is not configured"), "{}", refused.stderr);
    assert!(ipvsadm_daemons(&node.netns).is_empty());
    stop_daemon(daemon);
}

/// A director of the pair: a namespace with the VIP on a dummy link and a UDP service whose
/// backend is the client (nothing answers there; the connection is what counts).
fn director(role: &str) -> NetNs {
    let netns = NetNs::new(role);
    netns.ip(&["link", "add", "lfvip0", "type", "dummy"]);
    netns.ip(&["addr", "add", "10.233.0.10/32", "dev", "lfvip0"]);
    netns.ip(&["link", "set", "lfvip0", "up"]);
    netns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    super::support::restore(
        &netns,
        "-A -u 10.233.0.10:5300 -s rr\n-a -u 10.233.0.10:5300 -r 10.232.0.2:5301 -m\n",
    );
    netns
}

/// Connections the backup's `ipvsadm -Lnc` lists from `client` to the VIP.
fn synced_connections(netns: &NetNs, client: &str) -> Vec<String> {
    netns
        .exec("ipvsadm", &["-Lnc"])
        .lines()
        .filter(|line| line.contains(&format!("{client}:")) && line.contains("10.233.0.10:5300"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_masters_connections_reach_the_backup_over_the_sync_link() {
    // active (master) --lfsync-- standby (backup); client -- active.
    let active = director("sync-active");
    let standby = director("sync-standby");
    let client = NetNs::new("sync-client");
    active.ip(&[
        "link",
        "add",
        "lfsynca",
        "type",
        "veth",
        "peer",
        "name",
        "lfsyncb",
        "netns",
        standby.name(),
    ]);
    for (netns, link, address) in
        [(&active, "lfsynca", "10.231.0.1/24"), (&standby, "lfsyncb", "10.231.0.2/24")]
    {
        netns.ip(&["addr", "add", address, "dev", link]);
        netns.ip(&["link", "set", link, "up"]);
    }
    active.ip(&[
        "link",
        "add",
        "lfclient",
        "type",
        "veth",
        "peer",
        "name",
        "lfclient0",
        "netns",
        client.name(),
    ]);
    active.ip(&["addr", "add", "10.232.0.1/24", "dev", "lfclient"]);
    active.ip(&["link", "set", "lfclient", "up"]);
    client.ip(&["addr", "add", "10.232.0.2/24", "dev", "lfclient0"]);
    client.ip(&["link", "set", "lfclient0", "up"]);
    client.ip(&["route", "add", "default", "via", "10.232.0.1"]);

    // Each node's role as keepalived's notify scripts would set it, with no daemon running.
    let dir = std::env::temp_dir().join(active.name());
    std::fs::create_dir_all(&dir).unwrap();
    let bin = libraflux_tests::libraflux_bin();
    let socket = dir.join("control.sock").to_string_lossy().into_owned();
    for (netns, link, role) in [(&active, "lfsynca", "master"), (&standby, "lfsyncb", "backup")] {
        let config = dir.join(format!("{role}.yaml"));
        std::fs::write(&config, format!("sync:\n  interface: {link}\n  sync_id: 5\nservices: []\n")).unwrap();
        let config = config.to_string_lossy().into_owned();
        netns.run(&bin, &["--control-socket", &socket, "sync", role, "-c", &config]).assert_code(0);
    }
    assert!(synced_connections(&standby, "10.232.0.2").is_empty());

    // Three datagrams of one flow: the kernel syncs a UDP connection at its third packet
    // (net.ipv4.vs.sync_threshold 3), and the master sends its buffer within 2 s.
    client.enter(|| {
        let socket = std::net::UdpSocket::bind("10.232.0.2:0").unwrap();
        for _ in 0..3 {
            socket.send_to(b"sync me", "10.233.0.10:5300").unwrap();
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while synced_connections(&standby, "10.232.0.2").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby never learnt the connection; the active node has:\n{}",
            active.exec("ipvsadm", &["-Lnc"])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let synced = synced_connections(&standby, "10.232.0.2");
    assert_eq!(synced.len(), 1, "{synced:?}");
    assert!(synced[0].contains("10.232.0.2:5301"), "the backend is synced too: {synced:?}");
}
