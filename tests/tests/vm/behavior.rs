//! docs/connection-behavior.md, reproduced: for every forwarding mode (NAT, DR) and every
//! combination of `expire_nodest_conn`, `expire_quiescent_template` and `conn_reuse_mode`, a
//! fresh client/director/backends topology carries real TCP and UDP traffic through the VIP, an
//! action hits the backend that carries it, and four probes say what happened to it.
//!
//! The results are written to `target/behavior/results-SERIES.json` and rendered into the tables
//! between the running kernel's markers in docs/connection-behavior.md (one section per kernel);
//! the test fails with a diff when the committed tables and this run disagree. `BLESS=1` rewrites
//! them instead.
//!
//! Topology (one per mode and sysctl combination, so no connection entry or persistence
//! template outlives its combination):
//!
//! ```text
//! client 10.201.0.2 (+ .11-.14, one source per action)
//!   | lf-c 10.201.0.1
//! director: VIP 10.220.0.10 on lfvip0, ip_forward=1
//!   | lf-b1 10.200.1.1        | lf-b2 10.200.2.1
//! backend A 10.200.1.2       backend B 10.200.2.2
//! ```
//!
//! NAT: backends route back through the director. DR: each backend holds the VIP on `lo`
//! (arp_ignore=1, arp_announce=2) and routes replies over its own link straight to the client
//! (10.202.N.0/24), so the director never sees a reply.

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use libraflux_tests::NetNs;
use socket2::{Domain, Protocol, Socket, Type};

use super::support::{check_generated_section, restore, results_file, workspace};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 220, 0, 10);
/// How long a probe waits for an answer before it calls the flow `stalls`.
const BOUND: Duration = Duration::from_secs(2);
/// The port the reused-source-port probe connects from, in every scenario.
const REUSED_PORT: u16 = 40100;
const UDP_PORT: u16 = 40200;
/// Persistence timeout of the sticky service (VIP:81), seconds.
const PERSISTENCE: u32 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Nat,
    Dr,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Nat => "NAT",
            Self::Dr => "DR",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Self::Nat => "-m",
            Self::Dr => "-g",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Sysctls {
    expire_nodest_conn: u8,
    expire_quiescent_template: u8,
    conn_reuse_mode: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    BackendRemoved,
    WeightZero,
    ServiceRemoved,
    BackendReadded,
}

const ACTIONS: [Action; 4] =
    [Action::BackendRemoved, Action::WeightZero, Action::ServiceRemoved, Action::BackendReadded];

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::BackendRemoved => "backend A removed (`ipvsadm -d`)",
            Self::WeightZero => "backend A set to weight 0 (`ipvsadm -e -w 0`)",
            Self::ServiceRemoved => "service removed (`ipvsadm -D`)",
            Self::BackendReadded => "backend A removed and re-added at once (`ipvsadm -d`, then `-a`)",
        }
    }

    /// ipvsadm -R lines applied to the three services (all on backend A).
    fn rules(self, mode: Mode) -> String {
        let mut rules = String::new();
        for (proto, port) in [("-t", 80), ("-t", 81), ("-u", 53)] {
            let service = format!("{proto} {VIP}:{port}");
            let dest = format!("-r 10.200.1.2:{port}");
            match self {
                Self::BackendRemoved => rules.push_str(&format!("-d {service} {dest}\n")),
                Self::WeightZero => rules.push_str(&format!("-e {service} {dest} {} -w 0\n", mode.flag())),
                Self::ServiceRemoved => rules.push_str(&format!("-D {service}\n")),
                Self::BackendReadded => rules
                    .push_str(&format!("-d {service} {dest}\n-a {service} {dest} {} -w 1\n", mode.flag())),
            }
        }
        rules
    }
}

const TRAFFIC: [&str; 4] = [
    "established TCP",
    "new TCP from a reused source port",
    "ongoing UDP flow",
    "persistent client, new TCP",
];

/// What a probe saw. Backends answer with their name, A (hit by the action) or B.
fn classify_answer(answer: std::io::Result<String>, continues: bool) -> String {
    match answer {
        Ok(name) if name == "A" && continues => "continues (A)".to_owned(),
        Ok(name) if name == "A" => "same backend (A)".to_owned(),
        Ok(name) if name == "B" => "new backend (B)".to_owned(),
        Ok(name) if name.is_empty() => "closed (EOF)".to_owned(),
        Ok(other) => format!("unexpected answer {other:?}"),
        Err(err) => classify_error(&err),
    }
}

fn classify_error(err: &std::io::Error) -> String {
    match err.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "stalls".to_owned(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
            "reset".to_owned()
        }
        ErrorKind::ConnectionRefused => "refused".to_owned(),
        _ => format!("error: {err}"),
    }
}

/// A TCP connection from `source` (port 0: any) to `dst`, with SO_REUSEADDR so a fixed source
/// port can be used again once its previous connection is closed.
fn connect_from(source: SocketAddrV4, dst: SocketAddrV4) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::V4(source).into())?;
    socket.connect_timeout(&SocketAddr::V4(dst).into(), BOUND)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(BOUND))?;
    stream.set_write_timeout(Some(BOUND))?;
    Ok(stream)
}

/// Sends `request` ("x": answer; "q": answer and close) and returns the backend's name, or ""
/// on EOF.
fn ask(stream: &mut TcpStream, request: &str) -> std::io::Result<String> {
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut buf = [0u8; 8];
    let read = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..read]).trim().to_owned())
}

fn ask_udp(socket: &UdpSocket) -> std::io::Result<String> {
    socket.send(b"x")?;
    let mut buf = [0u8; 8];
    let read = socket.recv(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..read]).trim().to_owned())
}

/// Runs `ip -n NS -batch FILE` over `commands`: one process instead of one per command.
fn ip_batch(netns: &NetNs, commands: &[String]) {
    let path = std::env::temp_dir().join(format!("{}.ip", netns.name()));
    std::fs::write(&path, commands.join("\n") + "\n").unwrap();
    netns.ip(&["-batch", &path.to_string_lossy()]);
    let _ = std::fs::remove_file(path);
}

struct Lab {
    mode: Mode,
    director: NetNs,
    client: NetNs,
    _backends: Vec<NetNs>,
    stop: Arc<AtomicBool>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Lab {
    fn new(mode: Mode, sysctls: Sysctls) -> Self {
        let director = NetNs::new("bdir");
        let client = NetNs::new("bcli");
        let backends = vec![NetNs::new("bka"), NetNs::new("bkb")];
        director.exec(
            "sysctl",
            &[
                "-qw",
                "net.ipv4.ip_forward=1",
                &format!("net.ipv4.vs.expire_nodest_conn={}", sysctls.expire_nodest_conn),
                &format!("net.ipv4.vs.expire_quiescent_template={}", sysctls.expire_quiescent_template),
                &format!("net.ipv4.vs.conn_reuse_mode={}", sysctls.conn_reuse_mode),
            ],
        );
        let mut dir_cmds = vec![
            "link add lfvip0 type dummy".to_owned(),
            format!("addr add {VIP}/32 dev lfvip0"),
            "link set lfvip0 up".to_owned(),
            format!("link add lf-c type veth peer name eth0 netns {}", client.name()),
            "addr add 10.201.0.1/24 dev lf-c".to_owned(),
            "link set lf-c up".to_owned(),
        ];
        let mut client_cmds = vec!["addr add 10.201.0.2/24 dev eth0".to_owned()];
        for n in 11..=14 {
            client_cmds.push(format!("addr add 10.201.0.{n}/24 dev eth0"));
        }
        client_cmds.push("link set eth0 up".to_owned());
        client_cmds.push("route add default via 10.201.0.1".to_owned());
        for (index, backend) in backends.iter().enumerate() {
            let n = index + 1;
            dir_cmds.push(format!("link add lf-b{n} type veth peer name eth0 netns {}", backend.name()));
            dir_cmds.push(format!("addr add 10.200.{n}.1/24 dev lf-b{n}"));
            dir_cmds.push(format!("link set lf-b{n} up"));
            if mode == Mode::Dr {
                client_cmds.push(format!("link add ret{n} type veth peer name ret netns {}", backend.name()));
                client_cmds.push(format!("addr add 10.202.{n}.1/24 dev ret{n}"));
                client_cmds.push(format!("link set ret{n} up"));
            }
            // Replies leave by another link than requests arrive on: no reverse-path filter.
            let mut settings =
                vec!["-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"];
            if mode == Mode::Dr {
                settings.extend(["net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]);
            }
            backend.exec("sysctl", &settings);
        }
        client.exec("sysctl", &["-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"]);
        ip_batch(&director, &dir_cmds);
        ip_batch(&client, &client_cmds);
        let stop = Arc::new(AtomicBool::new(false));
        for (index, backend) in backends.iter().enumerate() {
            let n = index + 1;
            let mut cmds = vec![format!("addr add 10.200.{n}.2/24 dev eth0"), "link set eth0 up".to_owned()];
            let bind = match mode {
                Mode::Nat => {
                    cmds.push(format!("route add default via 10.200.{n}.1"));
                    Ipv4Addr::new(10, 200, n as u8, 2)
                }
                Mode::Dr => {
                    cmds.push(format!("addr add {VIP}/32 dev lo"));
                    cmds.push(format!("addr add 10.202.{n}.2/24 dev ret"));
                    cmds.push("link set ret up".to_owned());
                    cmds.push(format!("route add default via 10.202.{n}.1"));
                    VIP
                }
            };
            ip_batch(backend, &cmds);
            if mode == Mode::Dr {
                backend.exec(
                    "sysctl",
                    &["-qw", "net.ipv4.conf.eth0.arp_ignore=1", "net.ipv4.conf.eth0.arp_announce=2"],
                );
            }
            serve(backend, if index == 0 { "A" } else { "B" }, bind, &stop);
        }
        Self { mode, director, client, _backends: backends, stop }
    }

    fn ipvs(&self, rules: &str) {
        restore(&self.director, rules);
    }

    /// The three services on backend A alone, so every flow set up before the action is on A.
    fn services_on_a(&self) -> String {
        let flag = self.mode.flag();
        format!(
            "-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 10.200.1.2:80 {flag} -w 1\n\
             -A -t {VIP}:81 -s rr -p {PERSISTENCE}\n-a -t {VIP}:81 -r 10.200.1.2:81 {flag} -w 1\n\
             -A -u {VIP}:53 -s rr\n-a -u {VIP}:53 -r 10.200.1.2:53 {flag} -w 1\n"
        )
    }

    fn add_b(&self) -> String {
        let flag = self.mode.flag();
        [("-t", 80), ("-t", 81), ("-u", 53)]
            .iter()
            .map(|(proto, port)| format!("-a {proto} {VIP}:{port} -r 10.200.2.2:{port} {flag} -w 1\n"))
            .collect()
    }

    /// One action on a clean table, probed by the four kinds of traffic from its own source
    /// address (so entries of earlier actions never match). Returns the four outcomes.
    fn scenario(&self, action: Action, source: Ipv4Addr) -> [String; 4] {
        self.ipvs(&format!("-C\n{}", self.services_on_a()));
        let vip = |port| SocketAddrV4::new(VIP, port);

        let (established, persistent_first, udp) = self.client.enter(move || {
            let mut established = connect_from(SocketAddrV4::new(source, 0), vip(80)).expect("establish TCP");
            assert_eq!(ask(&mut established, "x").expect("first answer"), "A");
            // The reused source port: the backend closes first, so the client's side ends in
            // CLOSED (not TIME_WAIT) and the port can be bound again.
            let mut reused =
                connect_from(SocketAddrV4::new(source, REUSED_PORT), vip(80)).expect("first reused-port TCP");
            assert_eq!(ask(&mut reused, "q").expect("answer before close"), "A");
            let mut rest = [0u8; 8];
            assert_eq!(reused.read(&mut rest).expect("backend closes"), 0, "backend closes first");
            drop(reused);
            let mut sticky = connect_from(SocketAddrV4::new(source, 0), vip(81)).expect("persistent TCP");
            let persistent_first = ask(&mut sticky, "x").expect("persistent answer");
            drop(sticky);
            let udp = UdpSocket::bind(SocketAddrV4::new(source, UDP_PORT)).unwrap();
            udp.connect(vip(53)).unwrap();
            udp.set_read_timeout(Some(BOUND)).unwrap();
            assert_eq!(ask_udp(&udp).expect("first UDP answer"), "A");
            (established, persistent_first, udp)
        });
        assert_eq!(persistent_first, "A");
        // Let the closed connection's last ACK land before anything changes.
        std::thread::sleep(Duration::from_millis(200));

        self.ipvs(&format!("{}{}", self.add_b(), action.rules(self.mode)));

        let probes = [
            self.client.spawn(move || {
                let mut established = established;
                classify_answer(ask(&mut established, "x"), true)
            }),
            self.client.spawn(move || match connect_from(SocketAddrV4::new(source, REUSED_PORT), vip(80)) {
                Ok(mut stream) => classify_answer(ask(&mut stream, "x"), false),
                Err(err) => classify_error(&err),
            }),
            self.client.spawn(move || classify_answer(ask_udp(&udp), false)),
            self.client.spawn(move || match connect_from(SocketAddrV4::new(source, 0), vip(81)) {
                Ok(mut stream) => classify_answer(ask(&mut stream, "x"), false),
                Err(err) => classify_error(&err),
            }),
        ];
        probes.map(|probe| probe.join().expect("probe thread"))
    }

    /// The UDP timeout: a flow whose backend was removed, probed only after `idle` of silence
    /// with the IPVS UDP timeout set to `udp_timeout` seconds.
    fn udp_after_idle(&self, udp_timeout: u32, idle: Duration, source: Ipv4Addr) -> String {
        self.director.exec("ipvsadm", &["--set", "0", "0", &udp_timeout.to_string()]);
        self.ipvs(&format!("-C\n{}", self.services_on_a()));
        let udp = self.client.enter(move || {
            let udp = UdpSocket::bind(SocketAddrV4::new(source, UDP_PORT)).unwrap();
            udp.connect(SocketAddrV4::new(VIP, 53)).unwrap();
            udp.set_read_timeout(Some(BOUND)).unwrap();
            assert_eq!(ask_udp(&udp).expect("first UDP answer"), "A");
            udp
        });
        self.ipvs(&format!("{}{}", self.add_b(), Action::BackendRemoved.rules(self.mode)));
        std::thread::sleep(idle);
        classify_answer(ask_udp(&udp), false)
    }
}

/// Backend `name`: TCP on `bind`:80 and :81 answering every line with its name ("q": answer
/// and close), UDP on `bind`:53 answering every datagram with its name. Threads end at `stop`.
fn serve(netns: &NetNs, name: &'static str, bind: Ipv4Addr, stop: &Arc<AtomicBool>) {
    for port in [80, 81] {
        let listener = netns.enter(move || TcpListener::bind((bind, port)).expect("bind a TCP backend"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::clone(stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let stop = Arc::clone(&stop);
                        std::thread::spawn(move || answer_tcp(stream, name, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
    }
    let socket = netns.enter(move || UdpSocket::bind((bind, 53)).expect("bind a UDP backend"));
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let stop = Arc::clone(stop);
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(name.as_bytes(), from);
            }
        }
    });
}

fn answer_tcp(mut stream: TcpStream, name: &str, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(read) => {
                if stream.write_all(format!("{name}\n").as_bytes()).is_err() {
                    return;
                }
                if buf[..read].starts_with(b"q") {
                    return;
                }
            }
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

struct Row {
    sysctls: Sysctls,
    outcomes: [String; 4],
}

fn render(kernel: &str, rows: &BTreeMap<(usize, usize), Vec<Row>>, udp_idle: &[(Mode, String)]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Observed on Linux {kernel} (Debian's stock kernel, qemu TCG, one vCPU), IPVS timeouts at their \
         defaults (tcp 900 s, tcpfin 120 s, udp 300 s), `net.ipv4.vs.conntrack=0`, scheduler `rr`, \
         persistence {PERSISTENCE} s on the sticky service. A probe waits at most {} s. Every flow was \
         on backend A before the action; backend B was added just before it.\n",
        BOUND.as_secs()
    ));
    for (mode_index, mode) in [Mode::Nat, Mode::Dr].iter().enumerate() {
        for (action_index, action) in ACTIONS.iter().enumerate() {
            out.push_str(&format!("\n#### {}: {}\n\n", mode.name(), action.name()));
            out.push_str("| expire_nodest_conn | expire_quiescent_template | conn_reuse_mode |");
            for traffic in TRAFFIC {
                out.push_str(&format!(" {traffic} |"));
            }
            out.push_str("\n|---|---|---|---|---|---|---|\n");
            for row in &rows[&(mode_index, action_index)] {
                let s = row.sysctls;
                out.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    s.expire_nodest_conn,
                    s.expire_quiescent_template,
                    s.conn_reuse_mode,
                    row.outcomes.join(" | ")
                ));
            }
        }
    }
    out.push_str(
        "\n#### The IPVS UDP timeout: backend A removed, the flow silent for 4 s, then probed\n\n\
         `ipvsadm --set 0 0 3` (UDP timeout 3 s), expire_nodest_conn=0, expire_quiescent_template=0, \
         conn_reuse_mode=1.\n\n| mode | ongoing UDP flow after 4 s of silence |\n|---|---|\n",
    );
    for (mode, outcome) in udp_idle {
        out.push_str(&format!("| {} | {outcome} |\n", mode.name()));
    }
    out
}

#[test]
fn connection_behavior_matches_the_committed_doc() {
    let started = Instant::now();
    let (kernel, series) = super::support::kernel();
    let mut rows: BTreeMap<(usize, usize), Vec<Row>> = BTreeMap::new();
    let mut json = Vec::new();
    for (mode_index, mode) in [Mode::Nat, Mode::Dr].into_iter().enumerate() {
        for expire_nodest_conn in 0..=1 {
            for expire_quiescent_template in 0..=1 {
                for conn_reuse_mode in 0..=2 {
                    let sysctls = Sysctls { expire_nodest_conn, expire_quiescent_template, conn_reuse_mode };
                    let lab = Lab::new(mode, sysctls);
                    for (action_index, action) in ACTIONS.into_iter().enumerate() {
                        let source = Ipv4Addr::new(10, 201, 0, 11 + action_index as u8);
                        let outcomes = lab.scenario(action, source);
                        for (traffic, outcome) in TRAFFIC.iter().zip(&outcomes) {
                            json.push(serde_json::json!({
                                "kernel": kernel, "mode": mode.name(),
                                "expire_nodest_conn": expire_nodest_conn,
                                "expire_quiescent_template": expire_quiescent_template,
                                "conn_reuse_mode": conn_reuse_mode,
                                "action": action.name(), "traffic": traffic, "outcome": outcome,
                            }));
                        }
                        rows.entry((mode_index, action_index)).or_default().push(Row { sysctls, outcomes });
                    }
                    eprintln!("{} {sysctls:?}: done at {:?}", mode.name(), started.elapsed());
                }
            }
        }
    }
    let mut udp_idle = Vec::new();
    for mode in [Mode::Nat, Mode::Dr] {
        let lab = Lab::new(
            mode,
            Sysctls { expire_nodest_conn: 0, expire_quiescent_template: 0, conn_reuse_mode: 1 },
        );
        let outcome = lab.udp_after_idle(3, Duration::from_secs(4), Ipv4Addr::new(10, 201, 0, 11));
        json.push(serde_json::json!({
            "kernel": kernel, "mode": mode.name(), "expire_nodest_conn": 0,
            "udp_timeout": 3, "action": "backend A removed, 4 s silence", "traffic": "ongoing UDP flow",
            "outcome": outcome,
        }));
        udp_idle.push((mode, outcome));
    }
    eprintln!("matrix finished in {:?}", started.elapsed());

    let results = results_file("behavior");
    std::fs::create_dir_all(workspace().join("target/behavior")).unwrap();
    std::fs::write(workspace().join(&results), serde_json::to_string_pretty(&json).unwrap()).unwrap();

    let fresh = render(&series, &rows, &udp_idle);
    check_generated_section("docs/connection-behavior.md", "behavior-matrix", &fresh, &results);
}
