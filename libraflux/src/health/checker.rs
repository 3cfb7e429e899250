//! One probe of one backend: the [`Checker`] trait, why a probe failed ([`CheckFailure`]), and
//! the checker for each configured check type.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use humantime::format_duration;
use tokio::time::Instant;

use super::{
    dns::DnsCheck,
    echo::EchoCheck,
    http::HttpCheck,
    ntp::NtpCheck,
    sip::SipCheck,
    tcp::{IdleSockets, TcpCheck},
};
use crate::config::Check;

/// One probe of one backend.
///
/// The future is boxed so the trait stays dyn-compatible: the scheduler holds checkers of several
/// types side by side, and its tests hand it fakes.
pub trait Checker: std::fmt::Debug + Send + Sync {
    /// Probes `target` once: the latency of the exchange, or why it failed. Implementations do not
    /// bound their own time; [`probe_bounded`] does, so a hanging backend costs one timeout.
    fn probe(&self, target: SocketAddr) -> BoxFuture<'_, Result<Duration, CheckFailure>>;
}

/// Why a probe failed, in a few words an operator can act on. Its `Display` is the reason logged
/// and shown by `status`; [`CheckFailure::outcome`] is the bounded label for metrics.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckFailure {
    /// The backend answered the SYN with a reset: nothing listens on the port.
    #[error("connection refused")]
    Refused,
    /// No answer within the check's timeout.
    #[error("timed out after {}", format_duration(*.0))]
    TimedOut(Duration),
    /// Any other socket error, at the step where it happened.
    #[error("{step}: {message}")]
    Io { step: Step, kind: io::ErrorKind, message: String },
    #[error("HTTP status {got}, expected {expected}")]
    HttpStatus { got: u16, expected: u16 },
    #[error("connection closed before a complete HTTP response head ({received} bytes received)")]
    HttpClosed { received: usize },
    #[error("HTTP response head longer than {limit} bytes")]
    HttpHeadTooLong { limit: usize },
    #[error("malformed HTTP response: {0}")]
    HttpMalformed(httparse::Error),
    /// The configured check cannot make a request (guarded against by config validation).
    #[error("cannot build the request: {0}")]
    Request(String),
    /// A UDP check's datagram drew an ICMP port unreachable: nothing listens on the port.
    #[error("port unreachable")]
    PortUnreachable,
    /// A UDP reply that cannot be the protocol's answer: undecodable, or not a reply at all.
    #[error("malformed reply: {0}")]
    Malformed(String),
    #[error("DNS rcode {got}, expected {expected}")]
    DnsRcode { got: String, expected: String },
    #[error("DNS answer section lacks {expected}{}", if *.truncated { " (reply truncated)" } else { "" })]
    DnsAnswer { expected: String, truncated: bool },
    #[error("SIP status {got}, expected {}", list(expected))]
    SipStatus { got: u16, expected: Vec<u16> },
    #[error("NTP server unsynchronised (stratum {stratum}, leap indicator {leap})")]
    NtpUnsynchronised { stratum: u8, leap: u8 },
    #[error("NTP reply does not answer our request (origin timestamp differs)")]
    NtpOrigin,
    #[error("NTP clock offset {} exceeds max_offset {}", format_duration(*.offset), format_duration(*.max))]
    NtpOffset { offset: Duration, max: Duration },
    #[error("echo reply differs from the expected text ({received} bytes received)")]
    EchoMismatch { received: usize },
}

/// `200` or `200 or 404` or `180, 183 or 200`.
fn list(codes: &[u16]) -> String {
    let text: Vec<String> = codes.iter().map(ToString::to_string).collect();
    match text.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => text.concat(),
    }
}

/// The step of a probe at which a socket error happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Connect,
    SendRequest,
    ReadResponse,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::SendRequest => "send request",
            Self::ReadResponse => "read response",
        })
    }
}

impl CheckFailure {
    /// Classifies a socket error at `step`.
    pub fn io(step: Step, err: &io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Self::Refused,
            kind => Self::Io { step, kind, message: err.to_string() },
        }
    }

    /// A short, bounded label for metrics (`outcome` of `libraflux_health_check_latency_seconds`);
    /// a successful probe is [`SUCCESS`].
    pub const fn outcome(&self) -> &'static str {
        match self {
            Self::Refused | Self::PortUnreachable => "refused",
            Self::TimedOut(_) => "timeout",
            Self::Io { .. } | Self::Request(_) => "error",
            Self::HttpStatus { .. } | Self::DnsRcode { .. } | Self::SipStatus { .. } => "bad_status",
            Self::HttpClosed { .. }
            | Self::HttpHeadTooLong { .. }
            | Self::HttpMalformed(_)
            | Self::Malformed(_)
            | Self::NtpOrigin
            | Self::EchoMismatch { .. } => "bad_response",
            Self::DnsAnswer { .. } => "bad_answer",
            Self::NtpUnsynchronised { .. } => "unsynchronised",
            Self::NtpOffset { .. } => "bad_offset",
        }
    }
}

/// The metrics outcome label of a successful probe.
pub const SUCCESS: &str = "success";

/// A check type a [`CheckerFactory`](super::CheckerFactory) cannot probe. [`checker_for`] probes
/// every configured type; the scheduler keeps this path for factories that decline one (the
/// daemon then treats the service as having no check and warns once per service).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("health check type {check_type} is not supported yet; its backends are not checked")]
pub struct Unsupported {
    pub check_type: &'static str,
}

/// The checker for `check`: `None` for `type: none`. TCP checks keep their sockets between probes
/// in `tcp`, which one scheduler shares between all of them.
pub fn checker_for(check: &Check, tcp: &Arc<IdleSockets>) -> Result<Option<Arc<dyn Checker>>, Unsupported> {
    match check {
        Check::None => Ok(None),
        Check::Tcp => Ok(Some(Arc::new(TcpCheck::new(Arc::clone(tcp))))),
        Check::Http { path, expect_status } => Ok(Some(Arc::new(HttpCheck::new(path, *expect_status)))),
        Check::Dns { query, record_type, expect_rcode, expect_answer } => {
            Ok(Some(Arc::new(DnsCheck::new(query, record_type, expect_rcode, expect_answer.as_deref()))))
        }
        Check::Sip { uri, expect_codes } => Ok(Some(Arc::new(SipCheck::new(uri.as_deref(), expect_codes)))),
        Check::Ntp { max_offset } => Ok(Some(Arc::new(NtpCheck::new(*max_offset)))),
        Check::Echo { payload, expect } => Ok(Some(Arc::new(EchoCheck::new(payload, expect)))),
    }
}

/// What one bounded probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub result: Result<(), CheckFailure>,
    /// The checker's own latency on success; the time spent (at most about the timeout) on failure.
    pub latency: Duration,
}

impl ProbeOutcome {
    /// The metrics outcome label: [`SUCCESS`] or [`CheckFailure::outcome`].
    pub fn outcome(&self) -> &'static str {
        match &self.result {
            Ok(()) => SUCCESS,
            Err(failure) => failure.outcome(),
        }
    }
}

/// Runs one probe, bounded by `timeout`: a backend that never answers costs exactly one timeout.
pub async fn probe_bounded(checker: &dyn Checker, target: SocketAddr, timeout: Duration) -> ProbeOutcome {
    let started = Instant::now();
    match tokio::time::timeout(timeout, checker.probe(target)).await {
        Ok(Ok(latency)) => ProbeOutcome { result: Ok(()), latency },
        Ok(Err(failure)) => ProbeOutcome { result: Err(failure), latency: started.elapsed() },
        Err(_elapsed) => {
            ProbeOutcome { result: Err(CheckFailure::TimedOut(timeout)), latency: started.elapsed() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Hangs;

    impl Checker for Hangs {
        fn probe(&self, _: SocketAddr) -> BoxFuture<'_, Result<Duration, CheckFailure>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_probe_costs_exactly_one_timeout() {
        let outcome = probe_bounded(&Hangs, "192.0.2.1:80".parse().unwrap(), Duration::from_secs(1)).await;
        assert_eq!(outcome.result, Err(CheckFailure::TimedOut(Duration::from_secs(1))));
        assert_eq!(outcome.latency, Duration::from_secs(1));
        assert_eq!(outcome.outcome(), "timeout");
    }

    #[test]
    fn failures_read_as_operators_expect() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(CheckFailure::io(Step::Connect, &refused).to_string(), "connection refused");
        assert_eq!(CheckFailure::TimedOut(Duration::from_secs(1)).to_string(), "timed out after 1s");
        assert_eq!(
            CheckFailure::TimedOut(Duration::from_millis(1500)).to_string(),
            "timed out after 1s 500ms"
        );
        assert_eq!(
            CheckFailure::HttpStatus { got: 503, expected: 200 }.to_string(),
            "HTTP status 503, expected 200"
        );
        let unreachable = io::Error::from_raw_os_error(libc::ENETUNREACH);
        let failure = CheckFailure::io(Step::Connect, &unreachable);
        assert!(failure.to_string().starts_with("connect: Network is unreachable"), "{failure}");
        assert_eq!(failure.outcome(), "error");
    }

    #[test]
    fn every_type_has_a_checker_but_none() {
        let tcp = Arc::default();
        assert!(checker_for(&Check::None, &tcp).unwrap().is_none());
        let dns = Check::Dns {
            query: "example.org".into(),
            record_type: "A".into(),
            expect_rcode: "NOERROR".into(),
            expect_answer: None,
        };
        for check in [
            Check::Tcp,
            Check::Http { path: "/".into(), expect_status: 200 },
            dns,
            Check::Sip { uri: None, expect_codes: vec![200] },
            Check::Ntp { max_offset: None },
            Check::Echo { payload: "ping".into(), expect: "pong".into() },
        ] {
            assert!(checker_for(&check, &tcp).unwrap().is_some(), "{check:?}");
        }
    }

    #[test]
    fn udp_failures_read_as_operators_expect() {
        let cases = [
            (CheckFailure::PortUnreachable, "port unreachable", "refused"),
            (
                CheckFailure::DnsRcode { got: "NXDOMAIN".into(), expected: "NOERROR".into() },
                "DNS rcode NXDOMAIN, expected NOERROR",
                "bad_status",
            ),
            (
                CheckFailure::DnsAnswer { expected: "10.9.9.9".into(), truncated: true },
                "DNS answer section lacks 10.9.9.9 (reply truncated)",
                "bad_answer",
            ),
            (
                CheckFailure::SipStatus { got: 404, expected: vec![200] },
                "SIP status 404, expected 200",
                "bad_status",
            ),
            (
                CheckFailure::SipStatus { got: 503, expected: vec![180, 183, 200] },
                "SIP status 503, expected 180, 183 or 200",
                "bad_status",
            ),
            (
                CheckFailure::NtpUnsynchronised { stratum: 16, leap: 3 },
                "NTP server unsynchronised (stratum 16, leap indicator 3)",
                "unsynchronised",
            ),
            (
                CheckFailure::NtpOffset { offset: Duration::from_millis(1500), max: Duration::from_secs(1) },
                "NTP clock offset 1s 500ms exceeds max_offset 1s",
                "bad_offset",
            ),
            (CheckFailure::Malformed("garbage".into()), "malformed reply: garbage", "bad_response"),
        ];
        for (failure, text, outcome) in cases {
            assert_eq!(failure.to_string(), text);
            assert_eq!(failure.outcome(), outcome, "{text}");
        }
    }
}
