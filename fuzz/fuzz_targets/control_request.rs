//! Arbitrary bytes as a request line on the daemon's control socket: decoding must never panic;
//! a request is taken whole or refused with a reply the client can read back; and a request
//! that decodes, encoded again, decodes to the same request (the CLI's encoder and the daemon's
//! decoder agree). Reply lines (what the CLI reads back) are decoded too.
//!
//! Run with `cargo xtask fuzz control_request` (seeds: the requests the CLI sends, in
//! `fuzz/seeds/control_request/`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use libraflux::control::{
    ReplyError,
    protocol::{decode_reply, decode_request, encode_reply, encode_request},
};

fuzz_target!(|data: &[u8]| {
    // The daemon reads the line as text: bytes that are not UTF-8 fail the read itself.
    let Ok(line) = std::str::from_utf8(data) else { return };
    match decode_request(line) {
        Ok(request) => {
            let encoded = encode_request(&request);
            assert!(!encoded.contains('\n'), "a request line holds no newline: {encoded}");
            let again = decode_request(&encoded)
                .unwrap_or_else(|err| panic!("{request:?} encoded as {encoded} does not decode: {err}"));
            assert_eq!(again, request, "encoded as {encoded}");
        }
        Err(err) => {
            let reply = Err(ReplyError::from(&err));
            let encoded = encode_reply(&reply);
            assert!(!encoded.contains('\n'), "a reply line holds no newline: {encoded}");
            let read = decode_reply(&encoded)
                .unwrap_or_else(|err| panic!("the refusal {encoded} does not decode: {err}"));
            assert_eq!(read, reply, "the refusal read back differs");
        }
    }
    let _ = decode_reply(line);
});
