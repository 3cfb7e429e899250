//! Arbitrary bytes as a snapshot file: reading must never panic, and a snapshot that reads
//! must survive the round trip: written out again, it reads back equal, and its services, taken
//! as the planner's desired state, make the same snapshot again (same checksum).
//!
//! A checksum is a SHA-256 the fuzzer cannot forge; so when the first byte is odd, a document
//! that parses gets its checksum computed here, and the rest of the reader's checks (version,
//! key order) and the round trip run on it. The rest of the input is the document.
//!
//! Run with `cargo xtask fuzz snapshot_json` (seeds: snapshots as `snapshot create` writes
//! them, in `fuzz/seeds/snapshot_json/`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use libraflux::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    let Some((mode, document)) = data.split_first() else { return };
    let read = if mode & 1 == 0 {
        Snapshot::from_bytes(document)
    } else {
        let Ok(mut snapshot) = serde_json::from_slice::<Snapshot>(document) else { return };
        snapshot.checksum = snapshot.computed_checksum();
        Snapshot::from_bytes(&snapshot.to_bytes())
    };
    let Ok(snapshot) = read else { return };
    let bytes = snapshot.to_bytes();
    let again = Snapshot::from_bytes(&bytes)
        .unwrap_or_else(|err| panic!("a snapshot written out does not read back: {err}"));
    assert_eq!(again, snapshot, "written as {}", String::from_utf8_lossy(&bytes));
    let remade = Snapshot::new(
        &snapshot.node,
        snapshot.created_at.clone(),
        snapshot.timeouts.into(),
        &snapshot.desired(),
    );
    assert_eq!(remade, snapshot, "the snapshot of its own desired state differs");
});
