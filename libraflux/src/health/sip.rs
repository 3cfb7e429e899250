//! `type: udp_sip`: an RFC 3261 OPTIONS request answered with a status in `expect_codes`.
//!
//! Why by hand: SIP is text, the request is one fixed template, and only the status line and
//! four headers of the response matter. The Rust SIP crates are parsers for whole stacks (or
//! unmaintained); one bounded parser here is smaller than adopting one. A response counts only if
//! it answers our request: same Call-ID, `CSeq: 1 OPTIONS` and our Via branch (RFC 3261
//! section 17.1.3); others are skipped. Provisional responses (1xx) are skipped too unless
//! expected, since a final response follows them.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::{
    checker::{CheckFailure, Checker, Step},
    udp::{Verdict, connected, exchange},
};
use crate::model::DestKey;

/// At most this many bytes of a response are read as its head (status line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// The RFC 3261 magic cookie that starts every compliant branch.
const BRANCH_COOKIE: &str = "z9hG4bK";

#[derive(Clone, Debug)]
pub struct SipCheck {
    /// Validated by the config: `sip:` or `sips:` and no whitespace. `None`: the backend itself.
    uri: Option<String>,
    expect_codes: Vec<u16>,
}

/// What makes one request unique, to match the response against.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Transaction {
    branch: String,
    call_id: String,
    tag: String,
}

impl Transaction {
    fn random() -> Self {
        let token = |len| std::iter::repeat_with(fastrand::alphanumeric).take(len).collect::<String>();
        Self { branch: format!("{BRANCH_COOKIE}{}", token(16)), call_id: token(24), tag: token(10) }
    }
}

impl SipCheck {
    pub fn new(uri: Option<&str>, expect_codes: &[u16]) -> Self {
        Self { uri: uri.map(str::to_owned), expect_codes: expect_codes.to_vec() }
    }

    /// The OPTIONS request from `local` (our socket's address, for Via and Contact) to `target`.
    fn request(&self, local: SocketAddr, target: SocketAddr, transaction: &Transaction) -> String {
        let uri =
            self.uri.clone().unwrap_or_else(|| format!("sip:{}", DestKey::new(target.ip(), target.port())));
        let host = match local.ip() {
            IpAddr::V4(addr) => addr.to_string(),
            IpAddr::V6(addr) => format!("[{addr}]"),
        };
        let local = DestKey::new(local.ip(), local.port());
        let Transaction { branch, call_id, tag } = transaction;
        format!(
            "OPTIONS {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:libraflux@{host}>;tag={tag}\r\n\
             To: <{uri}>\r\n\
             Call-ID: {call_id}@{host}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Contact: <sip:libraflux@{local}>\r\n\
             Accept: application/sdp\r\n\
             User-Agent: libraflux-health/{}\r\n\
             Content-Length: 0\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
        )
    }

    /// Judges one datagram as the response to a request with Via branch `branch` and Call-ID
    /// `call_id` (before its `@host`), as a probe judges each datagram. Public for the fuzz
    /// target (`fuzz/fuzz_targets/health_sip.rs`).
    #[doc(hidden)]
    pub fn judge_reply(&self, branch: &str, call_id: &str, reply: &[u8]) -> Result<Verdict, CheckFailure> {
        let transaction =
            Transaction { branch: branch.to_owned(), call_id: call_id.to_owned(), tag: String::new() };
        self.judge(&transaction, reply)
    }

    /// Judges one datagram as the response to `transaction`.
    fn judge(&self, transaction: &Transaction, reply: &[u8]) -> Result<Verdict, CheckFailure> {
        let response = Response::parse(reply)?;
        let call_id = response.header(&["call-id", "i"]).unwrap_or_default();
        let ours = call_id.split('@').next() == Some(transaction.call_id.as_str())
            && response.header(&["cseq"]).is_some_and(|cseq| {
                let mut parts = cseq.split_whitespace();
                parts.next() == Some("1") && parts.next().is_some_and(|m| m.eq_ignore_ascii_case("OPTIONS"))
            })
            && response.header(&["via", "v"]).and_then(branch_of) == Some(transaction.branch.as_str());
        if !ours {
            return Ok(Verdict::Unrelated);
        }
        if self.expect_codes.contains(&response.status) {
            return Ok(Verdict::Healthy);
        }
        if response.status < 200 {
            return Ok(Verdict::Unrelated);
        }
        Err(CheckFailure::SipStatus { got: response.status, expected: self.expect_codes.clone() })
    }
}

impl Checker for SipCheck {
    fn probe(&self, target: SocketAddr) -> BoxFuture<'_, Result<Duration, CheckFailure>> {
        Box::pin(async move {
            let started = Instant::now();
            let socket = connected(target).await?;
            let local = socket.local_addr().map_err(|err| CheckFailure::io(Step::Connect, &err))?;
            let transaction = Transaction::random();
            let request = self.request(local, target, &transaction);
            exchange(&socket, request.as_bytes(), |reply| self.judge(&transaction, reply)).await?;
            Ok(started.elapsed())
        })
    }
}

/// The `branch` parameter of the first Via value.
fn branch_of(via: &str) -> Option<&str> {
    let first = via.split(',').next()?;
    first.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim().eq_ignore_ascii_case("branch").then(|| value.trim())
    })
}

/// The status and headers of a SIP response head.
#[derive(Debug)]
struct Response<'a> {
    status: u16,
    headers: Vec<(&'a str, &'a str)>,
}

impl<'a> Response<'a> {
    fn parse(datagram: &'a [u8]) -> Result<Self, CheckFailure> {
        let malformed = |what: &str| CheckFailure::Malformed(format!("SIP response: {what}"));
        let head = &datagram[..datagram.len().min(MAX_HEAD)];
        let end = head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| malformed(&format!("no end of the head within {} bytes", head.len())))?;
        let head = std::str::from_utf8(&head[..end]).map_err(|_| malformed("not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        if parts.next() != Some("SIP/2.0") {
            return Err(malformed("the status line does not start with SIP/2.0"));
        }
        let status = parts
            .next()
            .filter(|code| code.len() == 3)
            .and_then(|code| code.parse::<u16>().ok())
            .filter(|code| (100..=699).contains(code))
            .ok_or_else(|| malformed("no status code"))?;
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':').ok_or_else(|| malformed("a header without a colon"))?;
            headers.push((name.trim(), value.trim()));
        }
        Ok(Self { status, headers })
    }

    /// The first header with any of `names` (long and compact forms), ignoring case.
    fn header(&self, names: &[&str]) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(name, _)| names.iter().any(|wanted| name.eq_ignore_ascii_case(wanted)))
            .map(|(_, value)| *value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transaction() -> Transaction {
        Transaction { branch: "z9hG4bKabc123".into(), call_id: "callid42".into(), tag: "tag7".into() }
    }

    fn response(status: &str, branch: &str, call_id: &str, cseq: &str) -> Vec<u8> {
        format!(
            "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={branch};received=10.0.0.1\r\n\
             From: <sip:libraflux@10.0.0.1>;tag=tag7\r\nTo: <sip:10.0.0.2:5060>;tag=x\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn ok() -> Vec<u8> {
        response("200 OK", "z9hG4bKabc123", "callid42@10.0.0.1", "1 OPTIONS")
    }

    #[test]
    fn the_request_carries_every_mandatory_header() {
        let check = SipCheck::new(None, &[200]);
        let request = check.request(
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:5060".parse().unwrap(),
            &transaction(),
        );
        assert!(request.starts_with("OPTIONS sip:10.0.0.2:5060 SIP/2.0\r\n"), "{request}");
        for header in [
            "Via: SIP/2.0/UDP 10.0.0.1:40000;branch=z9hG4bKabc123;rport\r\n",
            "Max-Forwards: 70\r\n",
            "From: <sip:libraflux@10.0.0.1>;tag=tag7\r\n",
            "To: <sip:10.0.0.2:5060>\r\n",
            "Call-ID: callid42@10.0.0.1\r\n",
            "CSeq: 1 OPTIONS\r\n",
            "Contact: <sip:libraflux@10.0.0.1:40000>\r\n",
        ] {
            assert!(request.contains(header), "{header:?} missing from {request}");
        }
        assert!(request.ends_with("Content-Length: 0\r\n\r\n"), "{request}");
        let v6 = SipCheck::new(Some("sip:health@example.test"), &[200]).request(
            "[fd00::1]:40000".parse().unwrap(),
            "[fd00::2]:5060".parse().unwrap(),
            &transaction(),
        );
        assert!(v6.starts_with("OPTIONS sip:health@example.test SIP/2.0\r\n"), "{v6}");
        assert!(v6.contains("Via: SIP/2.0/UDP [fd00::1]:40000;"), "{v6}");
        assert!(v6.contains("From: <sip:libraflux@[fd00::1]>;"), "{v6}");
    }

    #[test]
    fn random_transactions_use_the_magic_cookie() {
        let (a, b) = (Transaction::random(), Transaction::random());
        assert!(a.branch.starts_with("z9hG4bK") && a.branch.len() > 7, "{a:?}");
        assert_ne!(a, b);
    }

    #[test]
    fn an_expected_status_of_our_transaction_passes() {
        let check = SipCheck::new(None, &[200]);
        assert!(matches!(check.judge(&transaction(), &ok()), Ok(Verdict::Healthy)));
        let compact = b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP h;branch=z9hG4bKabc123\r\ni: callid42@h\r\n\
                        CSeq: 1 options\r\nl: 0\r\n\r\n";
        assert!(matches!(check.judge(&transaction(), compact), Ok(Verdict::Healthy)));
    }

    #[test]
    fn another_final_status_fails_and_a_provisional_one_waits() {
        let check = SipCheck::new(None, &[200]);
        let busy = response("486 Busy Here", "z9hG4bKabc123", "callid42@h", "1 OPTIONS");
        assert_eq!(
            check.judge(&transaction(), &busy).unwrap_err(),
            CheckFailure::SipStatus { got: 486, expected: vec![200] }
        );
        let trying = response("100 Trying", "z9hG4bKabc123", "callid42@h", "1 OPTIONS");
        assert!(matches!(check.judge(&transaction(), &trying), Ok(Verdict::Unrelated)));
        let check = SipCheck::new(None, &[200, 486]);
        assert!(matches!(check.judge(&transaction(), &busy), Ok(Verdict::Healthy)));
    }

    #[test]
    fn responses_to_other_requests_are_skipped() {
        let check = SipCheck::new(None, &[200]);
        for other in [
            response("200 OK", "z9hG4bKother", "callid42@h", "1 OPTIONS"),
            response("200 OK", "z9hG4bKabc123", "callid43@h", "1 OPTIONS"),
            response("200 OK", "z9hG4bKabc123", "callid42@h", "2 OPTIONS"),
            response("200 OK", "z9hG4bKabc123", "callid42@h", "1 INVITE"),
        ] {
            assert!(matches!(check.judge(&transaction(), &other), Ok(Verdict::Unrelated)));
        }
    }

    #[test]
    fn what_is_not_a_sip_response_is_malformed() {
        let check = SipCheck::new(None, &[200]);
        for garbage in [
            &b"HTTP/1.1 200 OK\r\n\r\n"[..],
            b"SIP/2.0 2000 OK\r\n\r\n",
            b"SIP/2.0 200 OK\r\nVia: x",
            b"OPTIONS sip:x SIP/2.0\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
            b"SIP/2.0 200 OK\r\nno colon\r\n\r\n",
        ] {
            let result = check.judge(&transaction(), garbage);
            assert!(matches!(result, Err(CheckFailure::Malformed(_))), "{garbage:?}: {result:?}");
        }
    }

    #[test]
    fn the_branch_is_read_from_the_first_via_value() {
        assert_eq!(
            branch_of("SIP/2.0/UDP h;branch=z9hG4bK1, SIP/2.0/UDP g;branch=z9hG4bK2"),
            Some("z9hG4bK1")
        );
        assert_eq!(branch_of("SIP/2.0/UDP h ; BRANCH = z9hG4bK1 ;rport"), Some("z9hG4bK1"));
        assert_eq!(branch_of("SIP/2.0/UDP h;rport"), None);
    }
}
