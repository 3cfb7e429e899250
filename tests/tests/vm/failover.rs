//! A failover that keeps an established connection (issue 17, docs/ha.md): two directors, each
//! with its own daemon and IPVS table in its own namespace, on one LAN with a client and a DR
//! backend. A long-lived TCP connection opened through the active director keeps exchanging
//! data after the VIP moves to the standby (moved by the test, as VRRP would, with the sync
//! roles switched through `libraflux sync` as keepalived's notify scripts do) when the
//! directors run the IPVS sync daemon; without `sync:` the same move resets it.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use libraflux_tests::NetNs;

use super::{
    daemon::Daemon,
    support::{Node, eventually},
};

const VIP: &str = "10.240.0.10";
const PORT: u16 = 7;
const CLIENT: &str = "10.240.0.100";
const BACKEND: &str = "10.240.0.50";
const DIRECTORS: [&str; 2] = ["10.240.0.1", "10.240.0.2"];
const LAN_IF: &str = "lan0";
/// Fixed MACs, so that the test can point the client's neighbour entry for the VIP at the
/// director that owns it, as the gratuitous ARP of a VRRP failover does.
const DIRECTOR_MACS: [&str; 2] = ["02:00:00:00:24:01", "02:00:00:00:24:02"];

/// The client, the backend and the two directors on one bridge.
struct Lan {
    _switch: NetNs,
    client: NetNs,
    backend: NetNs,
    directors: [Node; 2],
}

impl Lan {
    fn new() -> Self {
        let switch = NetNs::new("lan");
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let plug = |netns: &NetNs, port: &str, address: &str, mac: Option<&str>| {
            let mut args = vec!["link", "add", LAN_IF];
            if let Some(mac) = mac {
                args.extend(["address", mac]);
            }
            args.extend(["type", "veth", "peer", "name", port, "netns", switch.name()]);
            netns.ip(&args);
            netns.ip(&["addr", "add", &format!("{address}/24"), "dev", LAN_IF]);
            netns.ip(&["link", "set", LAN_IF, "up"]);
            switch.ip(&["link", "set", port, "master", "br0"]);
            switch.ip(&["link", "set", port, "up"]);
        };
        let (client, backend) = (NetNs::new("client"), NetNs::new("backend"));
        plug(&client, "pc", CLIENT, None);
        plug(&backend, "pr", BACKEND, None);
        // A DR backend: the VIP on its loopback, never answering ARP for it.
        backend.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
        for setting in ["net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"] {
            backend.exec("sysctl", &["-w", setting]);
        }
        let directors = [Node::new(), Node::new()];
        for (index, director) in directors.iter().enumerate() {
            plug(&director.netns, &format!("pd{index}"), DIRECTORS[index], Some(DIRECTOR_MACS[index]));
        }
        Self { _switch: switch, client, backend, directors }
    }

    /// Puts the VIP on director `to` (off the other) and points the client at it.
    fn move_vip(&self, to: usize) {
        let from = 1 - to;
        let vip = format!("{VIP}/32");
        let _ = self.directors[from].netns.run("ip", &["addr", "del", &vip, "dev", LAN_IF]);
        self.directors[to].netns.ip(&["addr", "add", &vip, "dev", LAN_IF]);
        let mac = DIRECTOR_MACS[to];
        self.client.ip(&["neigh", "replace", VIP, "lladdr", mac, "dev", LAN_IF, "nud", "permanent"]);
    }
}

fn config(name: &str, sync: bool) -> String {
    let sync = if sync { format!("sync:\n  interface: {LAN_IF}\n  sync_id: 7\n") } else { String::new() };
    format!(
        "node:\n  name: {name}\n{sync}services:\n  - name: echo\n    protocol: tcp\n    vip: {VIP}\n    port: {PORT}\n    scheduler: rr\n    forwarding: dr\n    health:\n      type: none\n    backends:\n      - address: {BACKEND}\n"
    )
}

/// An echo server on the backend: each line back, until the client closes or 60 s pass.
fn echo_server(backend: &NetNs) -> std::thread::JoinHandle<()> {
    let listener = backend.enter(|| TcpListener::bind(("0.0.0.0", PORT)).expect("bind the echo port"));
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else { return };
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut writer = stream.try_clone().unwrap();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if writer.write_all(format!("{line}\n").as_bytes()).is_err() {
                return;
            }
        }
    })
}

/// Sends `line` and reads one line back within 5 s.
fn exchange(stream: &TcpStream, line: &str) -> std::io::Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    (&*stream).write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    let read = BufReader::new(stream).read_line(&mut answer)?;
    if read == 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
    }
    Ok(answer.trim_end().to_owned())
}

/// The connections director `node`'s IPVS holds to the backend (`ipvsadm -Lnc`).
fn connections(node: &Node) -> Vec<String> {
    node.netns
        .exec("ipvsadm", &["-Lnc"])
        .lines()
        .filter(|line| line.contains(&format!("{BACKEND}:{PORT}")) && line.contains(CLIENT))
        .map(str::to_owned)
        .collect()
}

/// Opens the long-lived connection from the client through the VIP and checks it works.
fn connect(lan: &Lan) -> TcpStream {
    let to: SocketAddr = format!("{VIP}:{PORT}").parse().unwrap();
    let stream = lan
        .client
        .enter(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
        .expect("connect through the VIP");
    assert_eq!(exchange(&stream, "before").unwrap(), "before");
    stream
}

#[test]
fn an_established_connection_survives_the_vip_moving_with_sync_and_is_reset_without() {
    // With sync: A active (sync master), B standby (sync backup).
    let lan = Lan::new();
    let server = echo_server(&lan.backend);
    lan.move_vip(0);
    let [a, b] = &lan.directors;
    let a_config = a.config("config.yaml", &config("lb-a", true));
    let b_config = b.config("config.yaml", &config("lb-b", true));
    let _a_daemon = Daemon::start(a, &a_config);
    let _b_daemon = Daemon::start(b, &b_config);
    a.libraflux(&["sync", "master"]).assert_code(0);
    b.libraflux(&["sync", "backup"]).assert_code(0);
    let daemons = |node: &Node| node.netns.exec("ipvsadm", &["--list", "--daemon"]);
    assert!(daemons(a).contains("master sync daemon (mcast=lan0, syncid=7"), "{}", daemons(a));
    assert!(daemons(b).contains("backup sync daemon (mcast=lan0, syncid=7"), "{}", daemons(b));

    let stream = connect(&lan);
    assert_eq!(connections(a).len(), 1, "A forwards the connection: {:?}", connections(a));
    eventually(
        "the standby's IPVS holds the connection, sent by the sync daemon",
        Duration::from_secs(15),
        || connections(b).iter().any(|line| line.contains("ESTABLISHED")),
    );

    // Failover, as keepalived does it: the VIP moves, then the notify scripts switch the roles.
    lan.move_vip(1);
    b.libraflux(&["sync", "master"]).assert_code(0);
    a.libraflux(&["sync", "backup"]).assert_code(0);
    for round in 0..3 {
        let line = format!("after-{round}");
        assert_eq!(exchange(&stream, &line).expect("the connection lives on through B"), line);
    }
    assert!(daemons(b).contains("master sync daemon"), "{}", daemons(b));
    drop(stream);
    server.join().unwrap();

    // Without sync: the same move, and the standby knows nothing of the connection.
    let lan = Lan::new();
    let server = echo_server(&lan.backend);
    lan.move_vip(0);
    let [a, b] = &lan.directors;
    let a_config = a.config("config.yaml", &config("lb-a", false));
    let _a_daemon = Daemon::start(a, &a_config);
    let stream = connect(&lan);
    lan.move_vip(1);
    // B's daemon starts once it holds the VIP (its pre-flight check wants the VIP there).
    let b_config = b.config("config.yaml", &config("lb-b", false));
    let _b_daemon = Daemon::start(b, &b_config);
    assert!(connections(b).is_empty(), "B has no record of the connection: {:?}", connections(b));
    // B's IPVS schedules only a SYN; the data segment reaches B's own stack, which holds the VIP
    // but no such connection, and resets it.
    let after = exchange(&stream, "after");
    assert!(
        matches!(&after, Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset),
        "without sync the connection should be reset by the standby, yet: {after:?}"
    );
    // The backend never hears of it: its echo thread ends at its own read timeout.
    drop((stream, server));
}
