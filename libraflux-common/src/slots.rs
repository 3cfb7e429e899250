//! Where a watched destination's counters live: a slot of a per-CPU array, found without a
//! lookup by key.
//!
//! Each family has an array of [`Slot4`] / [`Slot6`] ([`COUNTERS_V4_MAP`](crate::COUNTERS_V4_MAP),
//! [`COUNTERS_V6_MAP`](crate::COUNTERS_V6_MAP)) and a [`SlotParams`] in [`SLOT_PARAMS_MAP`]. A
//! destination may sit in one of two slots, [`candidate_slots`] of its hash under the family's
//! seed; userspace places every watched destination in one of its two (cuckoo hashing: it moves
//! others to their other slot to make room, and draws a new seed if that fails), and writes the
//! key into the slot on every CPU. The program hashes the packet's destination, reads the two
//! slots in order, and counts in the one whose key is the destination; if neither is, the
//! destination is not watched. An empty slot holds a zeroed key, whose protocol (0) no counted
//! packet has.
//!
//! Why not a hash map keyed by destination: its lookup alone cost about 27 ns per packet on the
//! benchmark host, more than the counter's whole budget (docs/benchmarks.md, issue 22 item 2);
//! the two array slots cost the hash below and, for a destination in its first slot, one load.

use crate::{Dest4, Dest6, DestEntry};

/// Name of the array map of two [`SlotParams`]: index [`SLOT_PARAMS_V4`] for IPv4, index
/// [`SLOT_PARAMS_V6`] for IPv6. Written by userspace only.
pub const SLOT_PARAMS_MAP: &str = "SLOT_PARAMS";
pub const SLOT_PARAMS_V4: u32 = 0;
pub const SLOT_PARAMS_V6: u32 = 1;

/// How one family's destinations are placed in its slots.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotParams {
    /// Mixed into every destination's hash; userspace draws another when a placement fails.
    pub seed: u64,
    /// How many slots the family's array has (its `max_entries`); 0 until userspace sets it, and
    /// then the program counts nothing.
    pub slots: u32,
    pub _pad: u32,
}

/// One slot of the IPv4 counters array: the destination it holds (zeroed when empty) and that
/// destination's entry on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot4 {
    pub key: Dest4,
    pub entry: DestEntry,
}

/// One slot of the IPv6 counters array, as [`Slot4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot6 {
    pub key: Dest6,
    pub _pad: u32,
    pub entry: DestEntry,
}

const _: () = assert!(size_of::<SlotParams>() == 16);
const _: () = assert!(size_of::<Slot4>() == 72);
const _: () = assert!(size_of::<Slot6>() == 88);

/// A 64-bit finalizer (splitmix64's): every input bit moves about half the output bits, so
/// destinations that differ only in their port spread over the whole array.
#[inline(always)]
const fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The hash of an IPv4 destination under `seed` (input of [`candidate_slots`]).
#[inline(always)]
pub const fn dest4_hash(key: &Dest4, seed: u64) -> u64 {
    let addr = u32::from_ne_bytes(key.addr) as u64;
    mix(seed ^ addr ^ ((key.port as u64) << 32) ^ ((key.proto as u64) << 48))
}

/// The hash of an IPv6 destination under `seed` (input of [`candidate_slots`]).
#[inline(always)]
pub const fn dest6_hash(key: &Dest6, seed: u64) -> u64 {
    let a = &key.addr;
    let high = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let low = u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    mix(mix(seed ^ high) ^ low ^ ((key.port as u64) << 32) ^ ((key.proto as u64) << 48))
}

/// The two slots, of `slots`, where the destination of `hash` may sit: each half of the hash
/// scaled to the array (multiply and shift, so the array needs no power-of-two size). They may
/// be the same slot.
#[inline(always)]
pub const fn candidate_slots(hash: u64, slots: u32) -> [u32; 2] {
    let slots = slots as u64;
    [(((hash >> 32) * slots) >> 32) as u32, (((hash & 0xffff_ffff) * slots) >> 32) as u32]
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), integers and byte arrays only, no implicit padding (asserted above:
    // 8 + 4 + 4 = 16; 8 + 64 = 72; 20 + 4 + 64 = 88).
    unsafe impl aya::Pod for super::SlotParams {}
    unsafe impl aya::Pod for super::Slot4 {}
    unsafe impl aya::Pod for super::Slot6 {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IPPROTO_TCP;

    #[test]
    fn candidate_slots_are_inside_the_array() {
        for slots in [1, 2, 3, 1000, u32::MAX] {
            for hash in [0, 1, u64::MAX, 0x8000_0000_8000_0000, 0xdead_beef_0123_4567] {
                let [a, b] = candidate_slots(hash, slots);
                assert!(a < slots && b < slots, "{hash:#x} in {slots}: {a}, {b}");
            }
        }
    }

    #[test]
    fn the_hash_depends_on_every_field_and_the_seed() {
        let key = Dest4 { addr: [10, 0, 0, 1], port: 80, proto: IPPROTO_TCP, _pad: 0 };
        let base = dest4_hash(&key, 7);
        assert_ne!(dest4_hash(&Dest4 { addr: [10, 0, 0, 2], ..key }, 7), base);
        assert_ne!(dest4_hash(&Dest4 { port: 81, ..key }, 7), base);
        assert_ne!(dest4_hash(&Dest4 { proto: 17, ..key }, 7), base);
        assert_ne!(dest4_hash(&key, 8), base);
        let key6 = Dest6 { addr: [1; 16], port: 80, proto: IPPROTO_TCP, _pad: 0 };
        let base6 = dest6_hash(&key6, 7);
        let mut other = key6;
        other.addr[15] = 2;
        assert_ne!(dest6_hash(&other, 7), base6);
        other = key6;
        other.addr[0] = 2;
        assert_ne!(dest6_hash(&other, 7), base6);
        assert_ne!(dest6_hash(&Dest6 { port: 81, ..key6 }, 7), base6);
        assert_ne!(dest6_hash(&key6, 8), base6);
    }
}
