//! The fleet of the BGP test: a router and two LB nodes on one fabric LAN, each LB node with a
//! backend of its own behind it (NAT), a client behind the router; BIRD 2 on the router and on
//! both LB nodes, eBGP between them. Every address is inside the test's namespaces.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use libraflux_tests::NetNs;

use super::super::support::Node;

/// The VIP both LB nodes announce (on their `lfvip0`, as [`Node::new`] makes it).
pub const VIP: &str = "10.220.0.10";
pub const PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;
const ROUTER: &str = "10.250.0.1";
/// The LB nodes' fabric addresses: the router's next hops for the VIP.
pub const LB: [&str; 2] = ["10.250.0.2", "10.250.0.3"];
const CLIENT: &str = "10.251.1.2";
const CLIENT_GATEWAY: &str = "10.251.1.1";
/// Each LB node's backend, and the node's address on the link to it.
const BACKENDS: [&str; 2] = ["10.252.1.2", "10.252.2.2"];
const BACKEND_GATEWAYS: [&str; 2] = ["10.252.1.1", "10.252.2.1"];
/// The link from each LB node to its backend, as the LB node names it.
pub const BACKEND_LINK: &str = "lfback0";
/// What each LB node's backend answers: which node's backend served the connection.
pub const NAMES: [&str; 2] = ["a", "b"];

/// One BIRD, killed on drop.
pub struct Bird {
    pub socket: PathBuf,
    pub config: PathBuf,
    pid_file: PathBuf,
    netns: String,
}

impl Bird {
    /// Starts BIRD in `netns` with `config` written to `dir/bird.conf`; it forks into the
    /// background once its configuration parses.
    pub fn start(netns: &NetNs, dir: &Path, config: &str) -> Self {
        let (socket, path, pid_file) = (dir.join("bird.ctl"), dir.join("bird.conf"), dir.join("bird.pid"));
        std::fs::write(&path, config).unwrap();
        let args =
            ["-c", path.to_str().unwrap(), "-s", socket.to_str().unwrap(), "-P", pid_file.to_str().unwrap()];
        netns.exec("bird", &args);
        Self { socket, config: path, pid_file, netns: netns.name().to_owned() }
    }

    /// `birdc -s SOCKET ARGS...` (the independent reader of what BIRD runs).
    pub fn birdc(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.netns, "birdc", "-s", self.socket.to_str().unwrap()];
        full.extend_from_slice(args);
        libraflux_tests::run("ip", &full)
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file)
            && let Ok(pid) = pid.trim().parse::<libc::pid_t>()
        {
            // SAFETY: kill(2) of the BIRD this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// An LB node's backend: answers every connection with its name, until dropped (or 10 minutes).
pub struct Backend {
    stop: Arc<AtomicBool>,
    _netns: NetNs,
}

impl Backend {
    fn start(netns: NetNs, address: &str, name: &'static str) -> Self {
        let at: SocketAddr = format!("{address}:{BACKEND_PORT}").parse().unwrap();
        let listener = netns.enter(move || TcpListener::bind(at).expect("bind the backend"));
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while !stopping.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        std::thread::spawn(move || serve(stream, name));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { stop, _netns: netns }
    }
}

/// Answers with `name`, then echoes what comes, until the client closes or is silent for 60 s.
fn serve(mut stream: TcpStream, name: &str) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    if stream.write_all(name.as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 64];
    while let Ok(read @ 1..) = stream.read(&mut buf) {
        if stream.write_all(&buf[..read]).is_err() {
            return;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub struct Fleet {
    _switch: NetNs,
    pub router: NetNs,
    pub router_bird: Bird,
    pub client: NetNs,
    pub lbs: [Node; 2],
    pub lb_birds: [Bird; 2],
    _backends: [Backend; 2],
}

impl Fleet {
    pub fn new() -> Self {
        let switch = NetNs::new("fabric");
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let plug = |netns: &NetNs, port: &str, address: &str| {
            netns.ip(&["link", "add", "fab0", "type", "veth", "peer", "name", port, "netns", switch.name()]);
            netns.ip(&["addr", "add", &format!("{address}/24"), "dev", "fab0"]);
            netns.ip(&["link", "set", "fab0", "up"]);
            switch.ip(&["link", "set", port, "master", "br0"]);
            switch.ip(&["link", "set", port, "up"]);
        };
        let router = NetNs::new("router");
        plug(&router, "prt", ROUTER);
        router.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        // Hash on ports too, so that one client's connections spread over both next hops.
        router.exec("sysctl", &["-qw", "net.ipv4.fib_multipath_hash_policy=1"]);
        let client = NetNs::new("client");
        link(&client, CLIENT, &router, CLIENT_GATEWAY, "lfclient0");
        client.ip(&["route", "add", "default", "via", CLIENT_GATEWAY]);
        let router_dir = std::env::temp_dir().join(router.name());
        std::fs::create_dir_all(&router_dir).unwrap();
        let router_bird = Bird::start(&router, &router_dir, &router_config());

        let lbs = [Node::new(), Node::new()];
        let mut backends = Vec::new();
        let mut lb_birds = Vec::new();
        for (index, lb) in lbs.iter().enumerate() {
            plug(&lb.netns, &format!("plb{index}"), LB[index]);
            lb.netns.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
            lb.netns.ip(&["route", "add", "default", "via", ROUTER]);
            let backend = NetNs::new("backend");
            link(&backend, BACKENDS[index], &lb.netns, BACKEND_GATEWAYS[index], BACKEND_LINK);
            backend.ip(&["route", "add", "default", "via", BACKEND_GATEWAYS[index]]);
            backends.push(Backend::start(backend, BACKENDS[index], NAMES[index]));
            lb_birds.push(Bird::start(&lb.netns, &lb.dir, &lb_config(index, &lb.dir)));
        }
        let fleet = Self {
            _switch: switch,
            router,
            router_bird,
            client,
            lbs,
            lb_birds: lb_birds.try_into().unwrap_or_else(|_| unreachable!()),
            _backends: backends.try_into().unwrap_or_else(|_| unreachable!()),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while fleet.router_bird.birdc(&["show", "protocols"]).matches("Established").count() < 2 {
            assert!(
                Instant::now() < deadline,
                "the router's BGP sessions did not come up:\n{}",
                fleet.router_bird.birdc(&["show", "protocols", "all"])
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        fleet
    }

    /// The LB node `index`'s daemon configuration: one service on the VIP with its own backend.
    pub fn daemon_config(&self, index: usize, hold_down: &str) -> String {
        let lb = &self.lbs[index];
        format!(
            "node:\n  name: lb-{}\n  interface: lfvip0\nannounce:\n  socket: {}\n  include: {}\n  \
             hold_down: {hold_down}\n  timeout: 10s\n  vips:\n    - address: {VIP}\n\
             services:\n  - name: web\n    protocol: tcp\n    vip: {VIP}\n    port: {PORT}\n    scheduler: mh\n    \
             health:\n      type: tcp\n      interval: 500ms\n      timeout: 400ms\n      rise: 1\n      fall: 2\n    \
             backends:\n      - address: {}\n        port: {BACKEND_PORT}\n",
            NAMES[index],
            self.lb_birds[index].socket.display(),
            include_path(&lb.dir).display(),
            BACKENDS[index],
        )
    }

    /// The router's next hops for the VIP in its kernel table, sorted.
    pub fn next_hops(&self) -> Vec<String> {
        let route = self.router.ip(&["route", "show", &format!("{VIP}/32")]);
        let words: Vec<&str> = route.split_whitespace().collect();
        let mut hops: Vec<String> =
            words.windows(2).filter(|pair| pair[0] == "via").map(|pair| pair[1].to_owned()).collect();
        hops.sort();
        hops
    }

    /// Polls the router's kernel table until its next hops for the VIP are `want`; how long that
    /// took. Panics after `within`.
    pub fn wait_for_next_hops(&self, want: &[&str], within: Duration) -> Duration {
        let started = Instant::now();
        while self.next_hops() != want {
            assert!(
                started.elapsed() < within,
                "the router's next hops for {VIP} stayed {:?}, not {want:?}, for {within:?}:\n{}",
                self.next_hops(),
                self.router_bird.birdc(&["show", "route", "all"])
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }

    /// `count` connections from the client through the VIP, one after another: the name each
    /// was answered with, or the error. Bounded: each has 2 s.
    pub fn requests(&self, count: usize) -> Vec<Result<String, String>> {
        self.client.enter(move || (0..count).map(|_| connect().and_then(|stream| answer(&stream))).collect())
    }

    /// Takes LB node `index`'s backend off (its link down) or puts it back.
    pub fn backend_link(&self, index: usize, up: bool) {
        self.lbs[index].netns.ip(&["link", "set", BACKEND_LINK, if up { "up" } else { "down" }]);
    }
}

/// A connection from the client (call it inside the client's namespace) to the VIP.
pub fn connect() -> Result<TcpStream, String> {
    let to: SocketAddr = format!("{VIP}:{PORT}").parse().unwrap();
    let stream = TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|err| err.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    Ok(stream)
}

/// The one-letter answer that comes next on `stream`.
pub fn answer(mut stream: &TcpStream) -> Result<String, String> {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(1) => Ok(String::from_utf8_lossy(&byte).into_owned()),
        Ok(_) => Err("closed".to_owned()),
        Err(err) => Err(format!("{:?}", err.kind())),
    }
}

/// The announce file of the LB node whose directory is `dir`.
pub fn include_path(dir: &Path) -> PathBuf {
    dir.join("bird-announce.conf")
}

/// A veth pair from `a` (address `a_address`) to `b` (`b_address`), both ends named `name`, /24.
fn link(a: &NetNs, a_address: &str, b: &NetNs, b_address: &str, name: &str) {
    a.ip(&["link", "add", name, "type", "veth", "peer", "name", name, "netns", b.name()]);
    for (netns, address) in [(a, a_address), (b, b_address)] {
        netns.ip(&["addr", "add", &format!("{address}/24"), "dev", name]);
        netns.ip(&["link", "set", name, "up"]);
    }
}

/// The router: eBGP with both LB nodes, whatever they send taken in, and equal routes merged
/// into one multipath route in the kernel table (`merge paths`).
fn router_config() -> String {
    format!(
        "router id {ROUTER};\nprotocol device {{}}\n\
         protocol kernel {{\n  ipv4 {{ export all; }};\n  merge paths on;\n}}\n\
         template bgp lb {{\n  local {ROUTER} as 65000;\n  ipv4 {{ import all; export none; }};\n}}\n\
         protocol bgp lb_a from lb {{ neighbor {} as 65001; }}\n\
         protocol bgp lb_b from lb {{ neighbor {} as 65001; }}\n",
        LB[0], LB[1]
    )
}

/// An LB node: LibraFlux's file included (a wildcard, so that BIRD starts before the file
/// exists), and its static protocol exported to the router.
fn lb_config(index: usize, dir: &Path) -> String {
    format!(
        "router id {};\nlog \"{}\" all;\nprotocol device {{}}\ninclude \"{}/bird-*.conf\";\n\
         protocol bgp upstream {{\n  local {} as 65001;\n  neighbor {ROUTER} as 65000;\n  \
         ipv4 {{ import none; export where proto = \"libraflux4\"; }};\n}}\n",
        LB[index],
        dir.join("bird.log").display(),
        dir.display(),
        LB[index],
    )
}
