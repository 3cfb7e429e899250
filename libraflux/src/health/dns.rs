//! `type: udp_dns`: a DNS query for `dns_query`/`dns_type` answered with the expected rcode and,
//! when `expect_answer` is set, with that value in the answer section.
//!
//! Messages are built and parsed by `hickory-proto` (the DNS codec alone: no resolver, no
//! DNSSEC). A reply counts only if it answers our query: same id (datagrams with another id are
//! skipped), QR set, opcode QUERY and our question echoed. A truncated reply (TC) is judged on
//! what it carries: a DNS server that answers at all with the right rcode is alive, so TC alone
//! never fails the check, but an `expect_answer` missing from a truncated reply does (we do not
//! retry over TCP).

use std::{net::SocketAddr, str::FromStr as _, time::Duration};

use futures_util::future::BoxFuture;
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
};
use tokio::time::Instant;

use super::{
    checker::{CheckFailure, Checker},
    udp::{Verdict, connected, exchange},
};

#[derive(Clone, Debug)]
pub struct DnsCheck {
    /// The question, or why the configured name and type cannot make one (the config loader
    /// validates both, so this is only a guard).
    query: Result<Query, String>,
    expect_rcode: String,
    expect_answer: Option<String>,
}

impl DnsCheck {
    pub fn new(name: &str, record_type: &str, expect_rcode: &str, expect_answer: Option<&str>) -> Self {
        let fqdn = if name.ends_with('.') { name.to_owned() } else { format!("{name}.") };
        let query =
            Name::from_ascii(&fqdn).map_err(|err| format!("dns_query {name:?}: {err}")).and_then(|name| {
                let record_type = RecordType::from_str(record_type)
                    .map_err(|err| format!("dns_type {record_type}: {err}"))?;
                Ok(Query::query(name, record_type))
            });
        Self { query, expect_rcode: expect_rcode.to_owned(), expect_answer: expect_answer.map(str::to_owned) }
    }

    /// The query datagram with message id `id`, recursion desired (a resolver backend answers
    /// from its cache or upstream; an authoritative one ignores the bit).
    fn request(&self, id: u16) -> Result<Vec<u8>, CheckFailure> {
        let query = self.query.clone().map_err(CheckFailure::Request)?;
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(query);
        message.to_vec().map_err(|err| CheckFailure::Request(format!("encode the DNS query: {err}")))
    }

    /// Judges one datagram as the reply to the query with id `id`. Public for the fuzz target
    /// (`fuzz/fuzz_targets/health_dns.rs`).
    #[doc(hidden)]
    pub fn judge(&self, id: u16, reply: &[u8]) -> Result<Verdict, CheckFailure> {
        if reply.len() >= 2 && u16::from_be_bytes([reply[0], reply[1]]) != id {
            return Ok(Verdict::Unrelated);
        }
        let message = Message::from_vec(reply)
            .map_err(|err| CheckFailure::Malformed(format!("undecodable DNS message: {err}")))?;
        if message.metadata.message_type != MessageType::Response {
            return Err(CheckFailure::Malformed("a DNS query, not a response (QR bit clear)".into()));
        }
        if message.metadata.op_code != OpCode::Query {
            return Err(CheckFailure::Malformed(format!("DNS opcode {:?}", message.metadata.op_code)));
        }
        if !self.is_our_question(&message.queries) {
            return Err(CheckFailure::Malformed("the DNS reply does not echo our question".into()));
        }
        let got = rcode_name(u16::from(message.metadata.response_code));
        if got != self.expect_rcode {
            return Err(CheckFailure::DnsRcode { got, expected: self.expect_rcode.clone() });
        }
        if let Some(expected) = &self.expect_answer
            && !message.answers.iter().any(|record| answer_matches(&record.data, expected))
        {
            let truncated = message.metadata.truncation;
            return Err(CheckFailure::DnsAnswer { expected: expected.clone(), truncated });
        }
        Ok(Verdict::Healthy)
    }

    fn is_our_question(&self, queries: &[Query]) -> bool {
        let Ok(ours) = &self.query else { return false };
        let [theirs] = queries else { return false };
        theirs.query_type() == ours.query_type()
            && theirs.query_class() == ours.query_class()
            && theirs.name().to_ascii().eq_ignore_ascii_case(&ours.name().to_ascii())
    }
}

impl Checker for DnsCheck {
    fn probe(&self, target: SocketAddr) -> BoxFuture<'_, Result<Duration, CheckFailure>> {
        Box::pin(async move {
            let id = fastrand::u16(..);
            let request = self.request(id)?;
            let started = Instant::now();
            exchange(&connected(target).await?, &request, |reply| self.judge(id, reply)).await?;
            Ok(started.elapsed())
        })
    }
}

/// The rcode as the configuration spells it (`expect_rcode`).
fn rcode_name(code: u16) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        other => format!("RCODE{other}"),
    }
}

/// An address matches as an address (`::1` and `0::1` are one); anything else as text, ignoring
/// case, a final dot and TXT quotes.
fn answer_matches(data: &hickory_proto::rr::RData, expected: &str) -> bool {
    if let (Some(got), Ok(want)) = (data.ip_addr(), expected.parse::<std::net::IpAddr>()) {
        return got == want;
    }
    let normal = |text: &str| text.trim_matches('"').trim_end_matches('.').to_ascii_lowercase();
    normal(&data.to_string()) == normal(expected)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::{
        op::ResponseCode,
        rr::{RData, Record, rdata::A},
    };

    use super::*;

    const ID: u16 = 0x1234;

    fn check(expect_rcode: &str, expect_answer: Option<&str>) -> DnsCheck {
        DnsCheck::new("health.example.test", "A", expect_rcode, expect_answer)
    }

    /// The reply a server would send to `check`'s query, before `edit`.
    fn reply(check: &DnsCheck, edit: impl FnOnce(&mut Message)) -> Vec<u8> {
        let mut message = Message::from_vec(&check.request(ID).unwrap()).unwrap();
        message.metadata.message_type = MessageType::Response;
        let name = message.queries[0].name().clone();
        message.add_answer(Record::from_rdata(name, 60, RData::A(A(Ipv4Addr::new(10, 9, 9, 9)))));
        edit(&mut message);
        message.to_vec().unwrap()
    }

    #[test]
    fn the_query_asks_one_question_with_recursion_desired() {
        let check = DnsCheck::new("Health.Example.test", "AAAA", "NOERROR", None);
        let query = Message::from_vec(&check.request(7).unwrap()).unwrap();
        assert_eq!(query.metadata.id, 7);
        assert_eq!(query.metadata.message_type, MessageType::Query);
        assert!(query.metadata.recursion_desired);
        assert_eq!(query.queries.len(), 1);
        assert_eq!(query.queries[0].query_type(), RecordType::AAAA);
        assert_eq!(query.queries[0].name().to_ascii(), "Health.Example.test.");
    }

    #[test]
    fn the_expected_rcode_and_answer_pass() {
        let check = check("NOERROR", Some("10.9.9.9"));
        assert!(matches!(check.judge(ID, &reply(&check, |_| {})), Ok(Verdict::Healthy)));
        let check = DnsCheck::new("HEALTH.example.test.", "A", "NOERROR", None);
        assert!(matches!(check.judge(ID, &reply(&check, |_| {})), Ok(Verdict::Healthy)));
    }

    #[test]
    fn another_id_is_skipped() {
        let check = check("NOERROR", None);
        let other = reply(&check, |m| m.metadata.id = ID + 1);
        assert!(matches!(check.judge(ID, &other), Ok(Verdict::Unrelated)));
    }

    #[test]
    fn another_rcode_fails_naming_both() {
        let check = check("NOERROR", None);
        for (code, name) in [
            (ResponseCode::NXDomain, "NXDOMAIN"),
            (ResponseCode::Refused, "REFUSED"),
            (ResponseCode::ServFail, "SERVFAIL"),
        ] {
            let reply = reply(&check, |m| {
                m.metadata.response_code = code;
                m.answers.clear();
            });
            let failure = check.judge(ID, &reply).unwrap_err();
            assert_eq!(failure, CheckFailure::DnsRcode { got: name.into(), expected: "NOERROR".into() });
        }
        let expects_nxdomain = check_nx();
        let reply = reply(&expects_nxdomain, |m| m.metadata.response_code = ResponseCode::NXDomain);
        assert!(matches!(expects_nxdomain.judge(ID, &reply), Ok(Verdict::Healthy)));
    }

    fn check_nx() -> DnsCheck {
        check("NXDOMAIN", None)
    }

    #[test]
    fn a_missing_answer_fails_and_says_whether_the_reply_was_truncated() {
        let check = check("NOERROR", Some("10.9.9.8"));
        let failure = check.judge(ID, &reply(&check, |_| {})).unwrap_err();
        assert_eq!(failure, CheckFailure::DnsAnswer { expected: "10.9.9.8".into(), truncated: false });
        let truncated = reply(&check, |m| {
            m.metadata.truncation = true;
            m.answers.clear();
        });
        let failure = check.judge(ID, &truncated).unwrap_err();
        assert_eq!(failure, CheckFailure::DnsAnswer { expected: "10.9.9.8".into(), truncated: true });
    }

    #[test]
    fn a_truncated_reply_with_the_right_rcode_passes() {
        let check = check("NOERROR", None);
        let truncated = reply(&check, |m| {
            m.metadata.truncation = true;
            m.answers.clear();
        });
        assert!(matches!(check.judge(ID, &truncated), Ok(Verdict::Healthy)));
    }

    #[test]
    fn replies_that_do_not_answer_the_query_are_malformed() {
        let check = check("NOERROR", None);
        let not_a_response = reply(&check, |m| m.metadata.message_type = MessageType::Query);
        let other_question = reply(&check, |m| {
            m.queries[0].set_name(Name::from_ascii("other.example.test.").unwrap());
        });
        let no_question = reply(&check, |m| m.queries.clear());
        let mut cut_short = reply(&check, |_| {});
        cut_short.truncate(cut_short.len() - 3);
        let mut garbage = ID.to_be_bytes().to_vec();
        garbage.extend_from_slice(b"\xff\xff garbage");
        for (name, datagram) in [
            ("not a response", not_a_response),
            ("other question", other_question),
            ("no question", no_question),
            ("cut short", cut_short),
            ("garbage", garbage),
            ("one byte", vec![0x12]),
        ] {
            let result = check.judge(ID, &datagram);
            assert!(matches!(result, Err(CheckFailure::Malformed(_))), "{name}: {result:?}");
        }
    }

    #[test]
    fn answers_match_as_addresses_or_as_text() {
        let a = RData::A(A(Ipv4Addr::new(10, 9, 9, 9)));
        assert!(answer_matches(&a, "10.9.9.9"));
        assert!(!answer_matches(&a, "10.9.9.90"));
        let cname =
            RData::CNAME(hickory_proto::rr::rdata::CNAME(Name::from_ascii("Target.example.").unwrap()));
        assert!(answer_matches(&cname, "target.example"));
        assert!(answer_matches(&cname, "target.example."));
    }

    #[test]
    fn rcodes_are_named_as_the_config_names_them() {
        assert_eq!(rcode_name(u16::from(ResponseCode::Refused)), "REFUSED");
        assert_eq!(rcode_name(9), "RCODE9");
    }
}
