//! Shared by the IPVS VM tests: running our client inside a namespace, building model values,
//! and reading the table back with ipvsadm, the independent reader.

use std::{
    future::Future,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::Command,
    process::Stdio,
    time::Duration,
};

use libraflux::{
    ipvs::{IpvsClient, OnFailure, Op},
    model::{DestKey, Destination, Forwarding, Service, ServiceKey},
};
use libraflux_tests::{NetNs, Ran, creds::Credentials};

/// The `node:` section of the configs the VM tests apply.
pub const HEADER: &str = "node:\n  interface: lfvip0\n";

/// Two services on one VIP (TCP with persistence, UDP), two backends each: `apply` and
/// `snapshot` tests start from it.
pub const TWO_SERVICES: &str = "
services:
  - name: web
    protocol: tcp
    vip: 10.220.0.10
    port: 80
    scheduler: wrr
    persistence: 300s
    backends:
      - address: 10.220.1.1
        port: 8080
        weight: 100
      - address: 10.220.1.2
        port: 8080
        weight: 50
  - name: dns
    protocol: udp
    vip: 10.220.0.10
    port: 53
    scheduler: rr
    backends:
      - address: 10.220.1.1
      - address: 10.220.1.2
";

/// Runs `f` with a fresh client on a current-thread runtime inside `netns`.
pub fn with_client<T, F, Fut>(netns: &NetNs, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(IpvsClient) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    netns.enter(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a tokio runtime");
        runtime.block_on(async move {
            let client = IpvsClient::connect().await.expect("connecting the IPVS client");
            f(client).await
        })
    })
}

/// Applies `ops` with our client and panics naming the first op that did not apply.
pub fn apply_all(netns: &NetNs, ops: Vec<Op>) {
    with_client(netns, move |mut client| async move {
        let report = client.apply_ops(&ops, OnFailure::Stop).await;
        assert!(report.transport_error.is_none(), "transport error: {:?}", report.transport_error);
        if let Some((index, err)) = report.refusals().next() {
            panic!("op {index} ({:?}) refused: {err}", ops[index]);
        }
        assert_eq!(report.applied(), ops.len(), "every op applied: {report:?}");
    });
}

/// Every service with its destinations, as our client lists them.
pub fn list(netns: &NetNs) -> Vec<Service> {
    with_client(netns, |mut client| async move {
        let services = client.list_services().await.expect("listing services");
        services.into_iter().map(|status| status.service).collect()
    })
}

/// `ipvsadm-save -n`: the table as ipvsadm reads it, lines sorted (its own order is the
/// kernel's hash order, which differs between namespaces: see `sorted_lines`).
pub fn saved(netns: &NetNs) -> String {
    libraflux_tests::sorted_lines(&netns.exec("ipvsadm-save", &["-n"]))
}

/// Feeds `rules` to `ipvsadm -R` inside `netns`. Not the `ipvsadm-restore` wrapper: it pipes
/// through grep, which the VM lacks, and then exits 0 having restored nothing.
pub fn restore(netns: &NetNs, rules: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns.name(), "ipvsadm", "-R"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running ipvsadm -R");
    child.stdin.take().expect("stdin").write_all(rules.as_bytes()).expect("writing rules");
    let output = child.wait_with_output().expect("waiting for ipvsadm -R");
    assert!(
        output.status.success(),
        "ipvsadm -R failed ({}) on:\n{rules}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn key(text: &str) -> ServiceKey {
    text.parse().unwrap_or_else(|err| panic!("service key {text:?}: {err}"))
}

pub fn dest_key(text: &str) -> DestKey {
    text.parse().unwrap_or_else(|err| panic!("destination key {text:?}: {err}"))
}

pub fn service(text: &str, scheduler: &str) -> Service {
    Service {
        key: key(text),
        scheduler: scheduler.to_owned(),
        persistence: None,
        persistence_netmask: None,
        destinations: Default::default(),
    }
}

pub fn dest(text: &str, weight: u32, forwarding: Forwarding) -> Destination {
    Destination { key: dest_key(text), weight, forwarding, upper_threshold: 0, lower_threshold: 0 }
}

/// The service with `dests` as its destinations.
pub fn with_dests(mut service: Service, dests: &[Destination]) -> Service {
    service.destinations = dests.iter().map(|dest| (dest.key, *dest)).collect();
    service
}

/// AddService, then AddDest for each destination, for every service.
pub fn add_ops(services: &[Service]) -> Vec<Op> {
    let mut ops = Vec::new();
    for service in services {
        ops.push(Op::AddService(service.clone()));
        ops.extend(service.destinations.values().map(|dest| Op::AddDest(service.key, *dest)));
    }
    ops
}

/// A namespace for IPVS tests whose IPv4 destinations are routable: the kernel refuses an
/// IPv4 destination whose address type is neither local nor unicast (EINVAL), and with only
/// `lo` every address is unreachable. The dummy link holds 10.0.0.0/8; nothing is sent.
pub fn director(role: &str) -> NetNs {
    let netns = NetNs::new(role);
    netns.ip(&["link", "add", "lfroutes", "type", "dummy"]);
    netns.ip(&["link", "set", "lfroutes", "up"]);
    netns.ip(&["addr", "add", "10.255.255.254/8", "dev", "lfroutes"]);
    netns
}

/// Sorted by key, as our client lists them.
pub fn sorted(mut services: Vec<Service>) -> Vec<Service> {
    services.sort_by_key(|service| service.key);
    services
}

/// `ipvsadm -Ln --thresholds` as (destination, upper, lower) for every destination line;
/// ipvsadm-save does not print thresholds.
pub fn thresholds(netns: &NetNs) -> Vec<(String, u32, u32)> {
    netns
        .exec("ipvsadm", &["-Ln", "--thresholds"])
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["->", dest, upper, lower, ..] if dest.contains(':') => Some((
                    (*dest).to_owned(),
                    upper.parse().expect("upper threshold"),
                    lower.parse().expect("lower threshold"),
                )),
                _ => None,
            }
        })
        .collect()
}

/// A namespace with the VIPs on a dummy interface, and a directory for config files.
pub struct Node {
    pub netns: NetNs,
    pub dir: PathBuf,
    /// The control socket of this node's daemon (`--control-socket`): every `libraflux` this
    /// node runs is given it.
    pub socket: PathBuf,
    /// The `libraflux` binary this node runs: [`libraflux_tests::libraflux_bin`] unless a test
    /// points it at a copy.
    pub bin: String,
}

impl Node {
    pub fn new() -> Self {
        let netns = NetNs::new("apply");
        netns.ip(&["link", "add", "lfvip0", "type", "dummy"]);
        netns.ip(&["addr", "add", "10.220.0.10/32", "dev", "lfvip0"]);
        netns.ip(&["link", "set", "lfvip0", "up"]);
        let dir = std::env::temp_dir().join(netns.name());
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("control.sock");
        Self { netns, dir, socket, bin: libraflux_tests::libraflux_bin() }
    }

    /// Writes a config file. Unless `text` sets `snapshots` itself, it gets a `snapshots.dir` in
    /// this node's directory, so apply's automatic snapshots stay out of /var/lib and of other tests.
    pub fn config(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        let mut text = text.to_owned();
        if !text.starts_with("snapshots:") && !text.contains("\nsnapshots:") {
            text.push_str(&format!("\nsnapshots:\n  dir: {}\n", self.snapshots_dir().display()));
        }
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// Where this node's configs keep snapshots.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.dir.join("snapshots")
    }

    /// Runs this node's `libraflux` with `args` in its namespace, as root, pointed at its daemon's
    /// control socket.
    pub fn libraflux(&self, args: &[&str]) -> Ran {
        let socket = self.socket.to_string_lossy();
        let mut full = vec!["--control-socket", &socket];
        full.extend_from_slice(args);
        self.netns.run(&self.bin, &full)
    }

    /// Runs `libraflux` with `args` as `credentials` (outside the namespace: what it does goes
    /// through the control socket), pointed at this node's daemon.
    pub fn libraflux_as(&self, credentials: &Credentials, args: &[&str]) -> Ran {
        let mut command = Command::new(&self.bin);
        command.arg("--control-socket").arg(&self.socket).args(args);
        credentials.apply(&mut command);
        Ran::from(command.output().unwrap_or_else(|err| panic!("cannot run {}: {err}", self.bin)))
    }

    /// GET `path` from the daemon's HTTP listener `listen` inside this node's namespace; the body
    /// of a 200 response.
    pub fn http_get(&self, listen: &str, path: &str) -> String {
        let (listen, request) = (
            listen.to_owned(),
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        );
        self.netns.enter(move || {
            let mut stream =
                TcpStream::connect(&listen).unwrap_or_else(|err| panic!("connect to {listen}: {err}"));
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            body.to_owned()
        })
    }

    /// The table as `ipvsadm-save -n` prints it, lines sorted (see `sorted_lines`).
    pub fn saved(&self) -> String {
        libraflux_tests::sorted_lines(&self.netns.exec("ipvsadm-save", &["-n"]))
    }
}

/// Polls `done` every 200 ms until it holds; panics naming `what` when `within` passes first.
pub fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("not within {within:?}: {what}");
}

/// The running kernel's release (`6.1.0-57-amd64`) and its series (`6.1`). The generated docs
/// name the series: Debian moves the ABI number with every point release of the same kernel, and
/// a fresh machine fetches whichever is current (the run's results-SERIES.json records the release).
pub fn kernel() -> (String, String) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim().to_owned();
    let series = release.split(['.', '-']).take(2).collect::<Vec<_>>().join(".");
    (release, series)
}

/// The workspace root, where docs/ and target/ live.
pub fn workspace() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A section of a committed doc that a VM test generates from what it observed on the running
/// kernel: the lines between `<!-- TAG linux-SERIES:begin ... -->` and `<!-- TAG
/// linux-SERIES:end -->` in `doc` (relative to the workspace), one section per kernel series.
/// Fails with a diff when the committed section and `fresh` disagree; with `BLESS` set, rewrites
/// the section instead. `results` names where the run's raw results are, for the message.
pub fn check_generated_section(doc: &str, tag: &str, fresh: &str, results: &str) {
    let (_, series) = kernel();
    let begin = format!("<!-- {tag} linux-{series}:begin");
    let end = format!("<!-- {tag} linux-{series}:end -->");
    let doc_path = workspace().join(doc);
    let text = std::fs::read_to_string(&doc_path).unwrap_or_else(|err| panic!("reading {doc}: {err}"));
    let missing = || format!("{doc} has no section for Linux {series}: add `{begin} -->` and `{end}`");
    let start = text.find(&begin).unwrap_or_else(|| panic!("{}", missing()));
    let start = start + text[start..].find("-->").expect("the begin marker ends") + "-->".len();
    let stop = text.find(&end).unwrap_or_else(|| panic!("{}", missing()));
    let committed = text[start..stop].trim_matches('\n');
    let fresh = fresh.trim_matches('\n');
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&doc_path, format!("{}\n{fresh}\n{}", &text[..start], &text[stop..])).unwrap();
        eprintln!("BLESS: rewrote the Linux {series} section of {}", doc_path.display());
        return;
    }
    assert!(
        committed == fresh,
        "{doc}'s Linux {series} section disagrees with this run (results in {results}; BLESS=1 rewrites it):\n{}",
        diff(committed, fresh)
    );
}

/// Where a VM test keeps the raw results of a run on this kernel: `target/NAME/results-SERIES.json`
/// (relative to the workspace).
pub fn results_file(name: &str) -> String {
    format!("target/{name}/results-{}.json", kernel().1)
}

/// Lines that differ between the committed and the fresh text, `-` committed, `+` fresh.
fn diff(committed: &str, fresh: &str) -> String {
    let old: Vec<&str> = committed.lines().collect();
    let new: Vec<&str> = fresh.lines().collect();
    let mut out = String::new();
    for index in 0..old.len().max(new.len()) {
        let (a, b) = (old.get(index), new.get(index));
        if a != b {
            if let Some(a) = a {
                out.push_str(&format!("-{a}\n"));
            }
            if let Some(b) = b {
                out.push_str(&format!("+{b}\n"));
            }
        }
    }
    out
}
