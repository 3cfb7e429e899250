//! Arbitrary bytes as the datagram a `udp_sip` check receives: judging it must never panic, and
//! a response judged healthy must answer our transaction with an expected status. The request's
//! Via branch is `z9hG4bKfuzzbranch` and its Call-ID `fuzzcallid`; 200 and 486 are expected.
//!
//! Run with `cargo xtask fuzz health_sip` (seeds: responses of sipp captured in
//! `fuzz/seeds/health_sip/`, see its README).

#![no_main]

use libfuzzer_sys::fuzz_target;
use libraflux::health::{sip::SipCheck, udp::Verdict};

const BRANCH: &str = "z9hG4bKfuzzbranch";
const CALL_ID: &str = "fuzzcallid";

fuzz_target!(|data: &[u8]| {
    let check = SipCheck::new(None, &[200, 486]);
    if let Ok(Verdict::Healthy) = check.judge_reply(BRANCH, CALL_ID, data) {
        let head = String::from_utf8_lossy(data);
        assert!(
            head.starts_with("SIP/2.0 200") || head.starts_with("SIP/2.0 486"),
            "a healthy response has an expected status: {head:?}"
        );
        assert!(head.contains(BRANCH) && head.contains(CALL_ID), "a healthy response is ours: {head:?}");
    }
});
