//! Arbitrary bytes as the datagram a `udp_dns` check receives: judging it must never panic, and
//! a reply judged healthy must carry our id. The first byte picks one of a few checks (record
//! types, an expected rcode, an expected answer that is an address or text, so that every
//! record type's text form is compared); the rest is the datagram. Message id 0x1234.
//!
//! Run with `cargo xtask fuzz health_dns` (seeds: replies of dnsmasq captured in
//! `fuzz/seeds/health_dns/`, see its README).

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use libraflux::health::{dns::DnsCheck, udp::Verdict};

const ID: u16 = 0x1234;

static CHECKS: LazyLock<Vec<DnsCheck>> = LazyLock::new(|| {
    vec![
        DnsCheck::new("health.example.test", "A", "NOERROR", Some("10.9.9.9")),
        DnsCheck::new("health.example.test", "A", "NOERROR", None),
        DnsCheck::new("health.example.test", "AAAA", "NOERROR", Some("2001:db8::9")),
        DnsCheck::new("health.example.test", "TXT", "NOERROR", Some("alive")),
        DnsCheck::new("missing.example.test", "A", "NXDOMAIN", None),
        DnsCheck::new("example.test", "MX", "NOERROR", Some("mail.example.test")),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Some((choice, reply)) = data.split_first() else { return };
    let check = &CHECKS[usize::from(*choice) % CHECKS.len()];
    if let Ok(Verdict::Healthy) = check.judge(ID, reply) {
        assert_eq!(reply.get(..2), Some(&ID.to_be_bytes()[..]), "a healthy reply carries our id");
    }
});
