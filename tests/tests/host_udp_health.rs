//! Host tier: the UDP checks against real servers from Debian (dnsmasq, sipp, chronyd) and
//! against a small in-test responder for replies no real server sends. Servers run in the
//! foreground in the right namespace of a veth pair, with their own files in a temp dir, bounded
//! by `timeout` and stopped on drop; the checker runs in the left namespace.

use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use libraflux::{
    config::Check,
    health::{CheckFailure, ProbeOutcome, checker_for, probe_bounded},
};
use libraflux_tests::{NetNs, VethPair};

/// A server is killed after this long even if its test forgets it.
const SERVER_LIFETIME: &str = "120";

/// One bounded probe from inside `netns`: what it found and the wall time it took.
fn probe_from(netns: &NetNs, check: &Check, target: &str, timeout: Duration) -> (ProbeOutcome, Duration) {
    let target: SocketAddr = target.parse().unwrap_or_else(|_| panic!("{target:?} is not an address"));
    let check = check.clone();
    netns.enter(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let checker = checker_for(&check, &std::sync::Arc::default()).expect("supported").expect("a checker");
        let started = Instant::now();
        let outcome = runtime.block_on(probe_bounded(checker.as_ref(), target, timeout));
        (outcome, started.elapsed())
    })
}

/// The result of one probe with a 2 s timeout.
fn probe(netns: &NetNs, check: &Check, target: &str) -> Result<(), CheckFailure> {
    probe_from(netns, check, target, Duration::from_secs(2)).0.result
}

/// Probes every 100 ms (at most 5 s) until the server answers at all, and returns that result.
fn first_answer(netns: &NetNs, check: &Check, target: &str) -> Result<(), CheckFailure> {
    let mut last = None;
    for _ in 0..50 {
        let result = probe_from(netns, check, target, Duration::from_millis(200)).0.result;
        match result {
            Err(CheckFailure::PortUnreachable | CheckFailure::TimedOut(_)) => last = Some(result),
            answered => return answered,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{target} does not answer {check:?} after 5 s: {last:?}");
}

/// Stops `server`, then asserts the check fails at once with port unreachable.
fn assert_unreachable_once_stopped(server: Server, netns: &NetNs, check: &Check, target: &str) {
    drop(server);
    let (outcome, took) = probe_from(netns, check, target, Duration::from_secs(5));
    assert_eq!(outcome.result, Err(CheckFailure::PortUnreachable), "{check:?}");
    assert_eq!(outcome.outcome(), "refused");
    assert!(took < Duration::from_secs(1), "port unreachable fails at once, not after a timeout: {took:?}");
}

/// A temp dir of its own for each server.
fn temp_dir(what: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lf-udp-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A server running in the foreground in a namespace, under `timeout`; stopped and its dir
/// removed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Server {
    fn start(netns: &NetNs, dir: PathBuf, program: &str, args: &[&str]) -> Self {
        let child = Command::new("timeout")
            .args(["--kill-after=2", SERVER_LIFETIME, "ip", "netns", "exec", netns.name(), program])
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {program} (is it installed?): {err}"));
        Self { child, dir }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM to `timeout`, which passes it on to the server (SIGKILL would orphan it).
        let pid = i32::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dns(query: &str, expect_rcode: &str, expect_answer: Option<&str>) -> Check {
    Check::Dns {
        query: query.to_owned(),
        record_type: "A".to_owned(),
        expect_rcode: expect_rcode.to_owned(),
        expect_answer: expect_answer.map(str::to_owned),
    }
}

/// dnsmasq with no upstream: `health.example.test` is 10.9.9.9, other names under
/// `example.test` do not exist (NXDOMAIN), and any other name is refused (REFUSED).
fn dnsmasq(netns: &NetNs) -> Server {
    Server::start(
        netns,
        temp_dir("dnsmasq"),
        "dnsmasq",
        &[
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--port=5353",
            "--listen-address=10.200.0.2",
            "--listen-address=fd00:200::2",
            "--bind-interfaces",
            "--local=/example.test/",
            "--address=/health.example.test/10.9.9.9",
            "--pid-file=",
            "--user=root",
        ],
    )
}

#[test]
fn udp_dns_against_dnsmasq() {
    let pair = VethPair::new();
    let (v4, v6) = ("10.200.0.2:5353", "[fd00:200::2]:5353");
    let server = dnsmasq(&pair.right);
    let healthy = dns("health.example.test", "NOERROR", Some("10.9.9.9"));
    assert_eq!(first_answer(&pair.left, &healthy, v4), Ok(()));
    assert_eq!(probe(&pair.left, &healthy, v6), Ok(()), "over IPv6");
    assert_eq!(probe(&pair.left, &dns("health.example.test", "NOERROR", None), v4), Ok(()));

    let wrong_answer = probe(&pair.left, &dns("health.example.test", "NOERROR", Some("10.9.9.8")), v4);
    assert_eq!(wrong_answer, Err(CheckFailure::DnsAnswer { expected: "10.9.9.8".into(), truncated: false }));

    let nxdomain = probe(&pair.left, &dns("unknown.example.test", "NOERROR", None), v4).unwrap_err();
    assert_eq!(nxdomain.to_string(), "DNS rcode NXDOMAIN, expected NOERROR");
    assert_eq!(nxdomain.outcome(), "bad_status");
    assert_eq!(probe(&pair.left, &dns("unknown.example.test", "NXDOMAIN", None), v4), Ok(()));

    let refused = probe(&pair.left, &dns("elsewhere.invalid", "NOERROR", None), v4);
    assert_eq!(refused, Err(CheckFailure::DnsRcode { got: "REFUSED".into(), expected: "NOERROR".into() }));

    assert_unreachable_once_stopped(server, &pair.left, &healthy, v4);
}

/// A sipp UAS scenario: receive OPTIONS, answer `status`, as many times as `-m` allows.
fn sipp_options_uas(netns: &NetNs, port: u16, status: &str) -> Server {
    let dir = temp_dir("sipp");
    let scenario = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="OPTIONS UAS">
  <recv request="OPTIONS" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Allow: OPTIONS
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#
    );
    std::fs::write(dir.join("options.xml"), scenario).unwrap();
    let port = port.to_string();
    Server::start(
        netns,
        dir,
        "sipp",
        &["-sf", "options.xml", "-i", "10.200.0.2", "-p", &port, "-m", "100", "-nostdin"],
    )
}

#[test]
fn udp_sip_against_sipp() {
    let pair = VethPair::new();
    let (ok_target, busy_target) = ("10.200.0.2:5060", "10.200.0.2:5062");
    let ok = sipp_options_uas(&pair.right, 5060, "200 OK");
    let _busy = sipp_options_uas(&pair.right, 5062, "486 Busy Here");
    let check = Check::Sip { uri: None, expect_codes: vec![200] };
    assert_eq!(first_answer(&pair.left, &check, ok_target), Ok(()));
    let with_uri = Check::Sip { uri: Some("sip:health@example.test".into()), expect_codes: vec![200] };
    assert_eq!(probe(&pair.left, &with_uri, ok_target), Ok(()));

    let busy = first_answer(&pair.left, &check, busy_target);
    assert_eq!(busy, Err(CheckFailure::SipStatus { got: 486, expected: vec![200] }));
    assert_eq!(busy.unwrap_err().to_string(), "SIP status 486, expected 200");
    let busy_expected = Check::Sip { uri: None, expect_codes: vec![200, 486] };
    assert_eq!(probe(&pair.left, &busy_expected, busy_target), Ok(()));

    assert_unreachable_once_stopped(ok, &pair.left, &check, ok_target);
}

/// chronyd serving time on `port` without touching the clock (`-x`); with `local stratum 10` it
/// counts as synchronised, without it it answers "unsynchronised" (leap 3, stratum 0).
fn chronyd(netns: &NetNs, port: u16, local: bool) -> Server {
    let dir = temp_dir("chrony");
    let config = format!(
        "{}allow all\nport {port}\nbindaddress 10.200.0.2\ncmdport 0\nbindcmdaddress /\n\
         pidfile {dir}/chronyd.pid\ndriftfile {dir}/drift\n",
        if local { "local stratum 10\n" } else { "" },
        dir = dir.display(),
    );
    std::fs::write(dir.join("chrony.conf"), config).unwrap();
    let config = dir.join("chrony.conf").display().to_string();
    Server::start(netns, dir, "chronyd", &["-d", "-x", "-f", &config])
}

#[test]
fn udp_ntp_against_chronyd() {
    let pair = VethPair::new();
    let (synced_target, unsynced_target) = ("10.200.0.2:1123", "10.200.0.2:1124");
    let synced = chronyd(&pair.right, 1123, true);
    let _unsynced = chronyd(&pair.right, 1124, false);
    let check = Check::Ntp { max_offset: None };
    assert_eq!(first_answer(&pair.left, &check, synced_target), Ok(()));
    // One clock on both ends: the offset is the asymmetry of a veth, far below a second.
    let bounded = Check::Ntp { max_offset: Some(Duration::from_secs(1)) };
    assert_eq!(probe(&pair.left, &bounded, synced_target), Ok(()));

    let unsynced = first_answer(&pair.left, &check, unsynced_target).unwrap_err();
    assert!(matches!(unsynced, CheckFailure::NtpUnsynchronised { .. }), "{unsynced:?}");
    assert_eq!(unsynced.outcome(), "unsynchronised");

    assert_unreachable_once_stopped(synced, &pair.left, &check, synced_target);
}

/// What the responder does with the request.
type Respond = Box<dyn FnOnce(&[u8]) -> Vec<Vec<u8>> + Send>;

/// A UDP responder bound to `bind` in `netns` for one request: it sends each datagram `respond`
/// makes, from `bind` or, with `from`, from another socket bound there. Waits at most 5 s.
fn respond_once(netns: &NetNs, bind: &str, from: Option<&str>, respond: Respond) -> JoinHandle<()> {
    let (bind, from) = (bind.to_owned(), from.map(str::to_owned));
    let (socket, sender) = netns.enter(move || {
        let socket = UdpSocket::bind(&bind).unwrap_or_else(|err| panic!("bind {bind}: {err}"));
        let sender =
            from.map(|from| UdpSocket::bind(&from).unwrap_or_else(|err| panic!("bind {from}: {err}")));
        (socket, sender)
    });
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::thread::spawn(move || {
        let mut request = vec![0; 2048];
        let Ok((read, peer)) = socket.recv_from(&mut request) else { return };
        for datagram in respond(&request[..read]) {
            sender.as_ref().unwrap_or(&socket).send_to(&datagram, peer).expect("send a reply");
        }
    })
}

/// A responder case: its name, the address it replies from (if not the target), what it sends
/// and what the probe finds.
type Case = (&'static str, Option<&'static str>, Respond, Result<(), CheckFailure>);

/// The DNS query turned into an empty NOERROR response: QR set, the question echoed.
fn dns_response(query: &[u8]) -> Vec<u8> {
    let mut reply = query.to_vec();
    reply[2] |= 0x80;
    reply
}

fn with_id(mut reply: Vec<u8>, id: u16) -> Vec<u8> {
    reply[..2].copy_from_slice(&id.to_be_bytes());
    reply
}

fn request_id(query: &[u8]) -> u16 {
    u16::from_be_bytes([query[0], query[1]])
}

#[test]
fn udp_dns_against_malformed_and_misdirected_replies() {
    let pair = VethPair::new();
    pair.right.ip(&["addr", "add", "10.200.0.3/24", "dev", VethPair::RIGHT_IF]);
    let target = "10.200.0.2:5354";
    let check = dns("health.example.test", "NOERROR", None);
    let timeout = Duration::from_millis(300);
    let cases: Vec<Case> = vec![
        (
            "the right id after a wrong one",
            None,
            Box::new(|q| vec![with_id(dns_response(q), request_id(q) ^ 1), dns_response(q)]),
            Ok(()),
        ),
        (
            "only a wrong id",
            None,
            Box::new(|q| vec![with_id(dns_response(q), request_id(q) ^ 1)]),
            Err(CheckFailure::TimedOut(timeout)),
        ),
        (
            "from another port",
            Some("10.200.0.2:5355"),
            Box::new(|q| vec![dns_response(q)]),
            Err(CheckFailure::TimedOut(timeout)),
        ),
        (
            "from another address",
            Some("10.200.0.3:5354"),
            Box::new(|q| vec![dns_response(q)]),
            Err(CheckFailure::TimedOut(timeout)),
        ),
    ];
    for (name, from, respond, expected) in cases {
        let responder = respond_once(&pair.right, target, from, respond);
        // A case that passes is given time for the responder thread on a loaded machine (it once
        // missed 300 ms); one that times out waits the short timeout its expectation names.
        let given = if expected.is_ok() { Duration::from_secs(5) } else { timeout };
        let (outcome, _) = probe_from(&pair.left, &check, target, given);
        assert_eq!(outcome.result, expected, "{name}");
        responder.join().unwrap();
    }
    let malformed: Vec<(&str, Respond)> = vec![
        (
            "cut short",
            Box::new(|q| {
                let reply = dns_response(q);
                vec![reply[..reply.len() - 3].to_vec()]
            }),
        ),
        ("garbage after our id", Box::new(|q| vec![[&q[..2], b"\xff\xff\xff garbage"].concat()])),
        ("the query reflected", Box::new(|q| vec![q.to_vec()])),
    ];
    for (name, respond) in malformed {
        let responder = respond_once(&pair.right, target, None, respond);
        let result = probe(&pair.left, &check, target);
        assert!(matches!(result, Err(CheckFailure::Malformed(_))), "{name}: {result:?}");
        responder.join().unwrap();
    }
}

#[test]
fn udp_sip_ntp_and_echo_against_malformed_replies() {
    let pair = VethPair::new();
    let target = "10.200.0.2:5070";
    let sip = Check::Sip { uri: None, expect_codes: vec![200] };
    let responder =
        respond_once(&pair.right, target, None, Box::new(|_| vec![b"HTTP/1.1 200 OK\r\n\r\n".to_vec()]));
    let result = probe(&pair.left, &sip, target);
    assert!(matches!(result, Err(CheckFailure::Malformed(_))), "{result:?}");
    responder.join().unwrap();

    let ntp = Check::Ntp { max_offset: None };
    let responder = respond_once(&pair.right, target, None, Box::new(|q| vec![q.to_vec()]));
    let result = probe(&pair.left, &ntp, target).unwrap_err();
    assert_eq!(result.to_string(), "malformed reply: NTP mode 3, expected 4 (server)");
    responder.join().unwrap();
    let responder = respond_once(
        &pair.right,
        target,
        None,
        Box::new(|_| {
            // A synchronised server reply (leap 0, v4, mode 4, stratum 2) to some other request.
            let mut reply = vec![0; 48];
            reply[0] = 0b00_100_100;
            reply[1] = 2;
            vec![reply]
        }),
    );
    assert_eq!(probe(&pair.left, &ntp, target), Err(CheckFailure::NtpOrigin));
    responder.join().unwrap();

    let echo = Check::Echo { payload: "ping".into(), expect: "ping".into() };
    let responder = respond_once(&pair.right, target, None, Box::new(|q| vec![q.to_vec()]));
    assert_eq!(probe(&pair.left, &echo, target), Ok(()));
    responder.join().unwrap();
    let responder = respond_once(&pair.right, target, None, Box::new(|_| vec![b"pong".to_vec()]));
    assert_eq!(probe(&pair.left, &echo, target), Err(CheckFailure::EchoMismatch { received: 4 }));
    responder.join().unwrap();
    let (outcome, took) = probe_from(&pair.left, &echo, target, Duration::from_secs(5));
    assert_eq!(outcome.result, Err(CheckFailure::PortUnreachable), "nothing listens any more");
    assert!(took < Duration::from_secs(1), "{took:?}");
}
