//! Arbitrary bytes as what a replication peer sends: the request line a secondary reads (an
//! announcement) or a primary reads (a fetch), and the answer lines each reads back. Reading and
//! checking them must never panic; an announcement is accepted only when one of our keys signed
//! it; and for every request read, the same fields signed with our key must be accepted when
//! their generation is newer, refused as a replay when it is older, and round-trip through the
//! wire format; an answer signed for it must be authentic for it alone.
//!
//! Run with `cargo xtask fuzz replication_wire` (seeds: announcements, fetches and answers as the
//! daemon writes them, signed with this target's key, in `fuzz/seeds/replication_wire/`).

#![no_main]

use std::{
    pin::pin,
    sync::LazyLock,
    task::{Context, Poll, Waker},
};

use libfuzzer_sys::fuzz_target;
use libraflux::replication::{
    Keys, Refusal, State,
    wire::{self, Announced, Answer, FetchAnswer, Outcome, Request, WireError},
};
use serde::de::DeserializeOwned;
use tokio::io::BufReader;

/// The pair's key in the seeds: 32 bytes of 0x5a.
static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys::from_bytes(vec![vec![0x5a; 32]]));
/// The secondary runs generation 5 of this bundle.
const RUNNING_SHA: &str = "2f1c6a47e4a6a4c9d3f1b1c2d5e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2";
const RUNNING: u64 = 5;

fuzz_target!(|data: &[u8]| {
    let running = State { generation: RUNNING, sha256: Some(RUNNING_SHA.to_owned()) };
    if let Ok(request) = read::<Request>(data) {
        let verdict = wire::check_announcement(&request, &KEYS, &running);
        if verdict.is_ok() {
            assert!(request.authentic(&KEYS), "an announcement accepted without our signature: {request:?}");
        }
        signed_again(&request, &running);
    }
    if let Ok(answer) = read::<Answer>(data) {
        let _ = answer.authentic(&KEYS, &Request::fetch(&KEYS, RUNNING_SHA));
    }
    let _ = read::<FetchAnswer>(data);
});

/// Reads one line the way a peer's line is read (bounded, whole, then JSON).
fn read<T: DeserializeOwned>(data: &[u8]) -> Result<T, WireError> {
    let mut reader = BufReader::new(data);
    let line = pin!(wire::read_line::<T, _>(&mut reader));
    // Bytes in memory never make the reader wait.
    let Poll::Ready(result) = line.poll(&mut Context::from_waker(Waker::noop())) else {
        panic!("reading from memory waited")
    };
    result
}

/// The request's fields, signed with our key: what a primary holding the key would send.
fn signed_again(request: &Request, running: &State) {
    let signed = match request {
        Request::Announce { node, generation, sha256, .. } => {
            Request::announce(&KEYS, node, *generation, sha256)
        }
        Request::Fetch { sha256, .. } => Request::fetch(&KEYS, sha256),
    };
    assert!(signed.authentic(&KEYS), "{signed:?} is not authentic under the key that signed it");
    let mut line = Vec::new();
    {
        let write = pin!(wire::write_line(&mut line, &signed));
        assert!(matches!(write.poll(&mut Context::from_waker(Waker::noop())), Poll::Ready(Ok(()))));
    }
    let again: Request =
        read(&line).unwrap_or_else(|err| panic!("{signed:?} written does not read back: {err}"));
    assert_eq!(again, signed, "written as {:?}", String::from_utf8_lossy(&line));

    match (&signed, wire::check_announcement(&signed, &KEYS, running)) {
        (Request::Fetch { .. }, verdict) => {
            assert!(
                matches!(verdict, Err(Refusal { reason: "bad_request", .. })),
                "a fetch announced: {verdict:?}"
            )
        }
        (Request::Announce { generation, sha256, .. }, Ok(Announced::Newer)) => {
            assert!(*generation > RUNNING, "generation {generation} taken over {RUNNING}");
            assert_eq!(sha256.len(), 64, "{sha256:?} taken for a SHA-256");
        }
        (Request::Announce { generation, sha256, .. }, Ok(Announced::Current)) => {
            assert!(*generation == RUNNING && sha256 == RUNNING_SHA, "{signed:?} taken for the running one");
        }
        (Request::Announce { generation, .. }, Err(refusal)) => match refusal.reason {
            "replay" => assert!(*generation <= RUNNING, "generation {generation} refused as a replay"),
            "bad_request" => {}
            other => panic!("{signed:?} refused for {other}: {}", refusal.detail),
        },
    }

    let answer = Answer::new(&KEYS, &signed, Outcome::Refused, (RUNNING, Some(RUNNING_SHA)), None);
    assert!(answer.authentic(&KEYS, &signed), "an answer is not authentic for its own request");
    let other = Request::announce(&KEYS, "another", RUNNING + 1, RUNNING_SHA);
    if other != signed {
        assert!(!answer.authentic(&KEYS, &other), "an answer for {signed:?} passes for {other:?}");
    }
}
