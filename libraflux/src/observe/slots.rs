//! Placing watched destinations in the counters arrays: each key in one of its two candidate
//! slots (`libraflux_common::candidate_slots`), cuckoo hashing. Pure bookkeeping: what it
//! decides, the caller writes to the kernel (counters.rs), in the order given.

use std::{collections::HashMap, hash::Hash};

use libraflux_common::candidate_slots;

/// Slots per watchable destination. Two-choice cuckoo hashing places keys reliably below half
/// the slots filled; at 2.5 the arrays are at most 40 % full.
pub(super) const SLOTS_PER_DESTINATION: (u32, u32) = (5, 2);
/// How many keys one insertion may displace before a new seed is drawn.
const MAX_KICKS: usize = 128;
/// How many seeds are tried before an insertion is refused.
const MAX_SEEDS: u32 = 32;
/// The first seed; the next ones follow from it, so placements are reproducible.
const FIRST_SEED: u64 = 0x2545_f491_4f6c_dd1d;

/// One family's placement.
#[derive(Debug)]
pub(super) struct SlotTable<K> {
    seed: u64,
    /// The array's length.
    len: u32,
    /// The key in each occupied slot: sparse, so that memory follows the keys placed, not the
    /// capacity (the daemon sizes its counters at twice what it watches).
    slots: HashMap<u32, K>,
    at: HashMap<K, u32>,
    capacity: u32,
    hash: fn(&K, u64) -> u64,
}

/// What an insertion changed.
#[derive(Debug)]
pub(super) enum Placed<K> {
    /// The key was placed already; nothing changed.
    Already,
    /// Keys moved, to be written in this order: each move's target is free (or moved from by
    /// an earlier move) when it is written. The last one is the new key (`from: None`).
    Moves(Vec<Move<K>>),
    /// A new seed: every key may have moved. `before` is where each key that was placed sat.
    Reseeded { before: HashMap<K, u32> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Move<K> {
    pub(super) key: K,
    /// Where its counters are now; `None` for the key being inserted.
    pub(super) from: Option<u32>,
    pub(super) to: u32,
}

/// No placement of every key was found (or the table holds `capacity` keys).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SlotsFull;

impl<K: Copy + Eq + Hash> SlotTable<K> {
    /// A table for up to `capacity` keys, with [`slot_count`] slots.
    pub(super) fn new(capacity: u32, hash: fn(&K, u64) -> u64) -> Self {
        Self {
            seed: FIRST_SEED,
            len: slot_count(capacity),
            slots: HashMap::new(),
            at: HashMap::new(),
            capacity,
            hash,
        }
    }

    /// How many keys fit.
    pub(super) fn capacity(&self) -> u32 {
        self.capacity
    }

    pub(super) fn seed(&self) -> u64 {
        self.seed
    }

    pub(super) fn slot_count(&self) -> u32 {
        self.len
    }

    pub(super) fn slot_of(&self, key: &K) -> Option<u32> {
        self.at.get(key).copied()
    }

    /// Every placed key and its slot, in no order.
    pub(super) fn placed(&self) -> impl Iterator<Item = (K, u32)> + '_ {
        self.at.iter().map(|(key, slot)| (*key, *slot))
    }

    /// Forgets `key`; the slot it had, if it was placed.
    pub(super) fn remove(&mut self, key: &K) -> Option<u32> {
        let slot = self.at.remove(key)?;
        self.slots.remove(&slot);
        Some(slot)
    }

    /// Places `key` in one of its two slots, moving others or drawing a new seed as needed.
    /// On [`SlotsFull`] nothing changed.
    pub(super) fn insert(&mut self, key: K) -> Result<Placed<K>, SlotsFull> {
        if self.at.contains_key(&key) {
            return Ok(Placed::Already);
        }
        if self.at.len() >= self.capacity as usize {
            return Err(SlotsFull);
        }
        if let Some(moves) = self.place(key) {
            for step in &moves {
                self.at.insert(step.key, step.to);
            }
            return Ok(Placed::Moves(moves));
        }
        self.reseed(key)
    }

    /// Cuckoo insertion under the current seed: the moves, in the order to write them, or `None`
    /// (and the slots as they were) if `MAX_KICKS` displacements, each into a slot the chain has
    /// not touched, did not find a free slot. Each key moves at most once, so each move reads
    /// its key's counters where they are when it is written.
    fn place(&mut self, key: K) -> Option<Vec<Move<K>>> {
        let mut moves = Vec::new();
        let mut undo: Vec<(u32, Option<K>)> = Vec::new();
        let (mut current, mut from) = (key, None);
        let [first, second] = self.candidates(&key);
        let mut target =
            if !self.slots.contains_key(&first) || self.slots.contains_key(&second) { first } else { second };
        for _ in 0..=MAX_KICKS {
            if undo.iter().any(|(slot, _)| *slot == target) {
                // The chain came back to a slot it filled: a key would move twice. Rare below
                // half full; a new seed is simpler than writing such a chain safely.
                break;
            }
            let previous = self.slots.insert(target, current);
            undo.push((target, previous));
            moves.push(Move { key: current, from, to: target });
            let Some(displaced) = previous else {
                // Written last to first: the displaced keys' new slots before the slots they leave.
                moves.reverse();
                return Some(moves);
            };
            let [a, b] = self.candidates(&displaced);
            (current, from) = (displaced, Some(target));
            target = if a == target { b } else { a };
        }
        for (slot, previous) in undo.into_iter().rev() {
            match previous {
                Some(key) => self.slots.insert(slot, key),
                None => self.slots.remove(&slot),
            };
        }
        None
    }

    /// Places every key and `key` afresh under the next seed that fits them all.
    fn reseed(&mut self, key: K) -> Result<Placed<K>, SlotsFull> {
        let mut keys: Vec<K> = self.at.keys().copied().collect();
        keys.push(key);
        let mut seed = self.seed;
        for _ in 0..MAX_SEEDS {
            seed = next_seed(seed);
            let mut fresh = Self {
                seed,
                len: self.len,
                slots: HashMap::with_capacity(keys.len()),
                at: HashMap::with_capacity(keys.len()),
                capacity: self.capacity,
                hash: self.hash,
            };
            let placed_all = keys.iter().all(|key| match fresh.place(*key) {
                Some(moves) => {
                    for step in moves {
                        fresh.at.insert(step.key, step.to);
                    }
                    true
                }
                None => false,
            });
            if placed_all {
                let before = std::mem::replace(self, fresh).at;
                return Ok(Placed::Reseeded { before });
            }
        }
        Err(SlotsFull)
    }

    fn candidates(&self, key: &K) -> [u32; 2] {
        candidate_slots((self.hash)(key, self.seed), self.len)
    }
}

/// The number of slots for `capacity` destinations (at least 16).
pub(super) fn slot_count(capacity: u32) -> u32 {
    let (numerator, denominator) = SLOTS_PER_DESTINATION;
    let wanted = u64::from(capacity) * u64::from(numerator) / u64::from(denominator);
    u32::try_from(wanted.max(16)).unwrap_or(u32::MAX)
}

fn next_seed(seed: u64) -> u64 {
    libraflux_common::dest4_hash(
        &libraflux_common::Dest4::default(),
        seed.wrapping_add(0x9e37_79b9_7f4a_7c15),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use libraflux_common::{Dest4, Dest6, IPPROTO_TCP, IPPROTO_UDP, dest4_hash, dest6_hash};

    use super::*;

    fn dest4(host: u8, port: u16) -> Dest4 {
        Dest4 { addr: [10, 0, 0, host], port, proto: IPPROTO_TCP, _pad: 0 }
    }

    /// Checks what the program relies on: every placed key in one of its candidate slots, no
    /// two keys in one slot, the map and the slots agreeing.
    fn check<K: Copy + Eq + Hash + std::fmt::Debug>(table: &SlotTable<K>) {
        let mut seen = HashSet::new();
        for (key, slot) in table.placed() {
            assert!(table.candidates(&key).contains(&slot), "{key:?} in slot {slot}, not a candidate");
            assert_eq!(table.slots.get(&slot), Some(&key));
            assert!(seen.insert(slot), "two keys in slot {slot}");
        }
        assert_eq!(table.slots.len(), table.at.len());
    }

    /// Applies what an insertion returned to a model of the kernel's slots, as counters.rs
    /// writes it, and checks the model ends up as the table.
    fn apply<K: Copy + Eq + Hash + std::fmt::Debug>(
        kernel: &mut Vec<Option<K>>,
        placed: Placed<K>,
        table: &SlotTable<K>,
    ) {
        match placed {
            Placed::Already => {}
            Placed::Moves(moves) => {
                for step in moves {
                    if let Some(from) = step.from {
                        assert_eq!(
                            kernel[from as usize],
                            Some(step.key),
                            "a move reads {step:?} where it is"
                        );
                    }
                    kernel[step.to as usize] = Some(step.key);
                }
            }
            Placed::Reseeded { before } => {
                for (key, slot) in &before {
                    assert_eq!(kernel[*slot as usize], Some(*key));
                }
                kernel.iter_mut().for_each(|slot| *slot = None);
                for (key, slot) in table.placed() {
                    kernel[slot as usize] = Some(key);
                }
            }
        }
        let dense: Vec<Option<K>> = (0..table.len).map(|slot| table.slots.get(&slot).copied()).collect();
        assert_eq!(kernel, &dense);
    }

    #[test]
    fn consecutive_ports_fill_the_table_to_capacity() {
        for capacity in [1, 7, 100, 1_000] {
            let mut table = SlotTable::new(capacity, dest4_hash);
            let mut kernel = vec![None; table.slot_count() as usize];
            for port in 0..capacity {
                let key = dest4(1, port as u16);
                let placed = table.insert(key).expect("room below capacity");
                apply(&mut kernel, placed, &table);
                assert!(matches!(table.insert(key), Ok(Placed::Already)));
            }
            check(&table);
            assert!(matches!(table.insert(dest4(2, 0)), Err(SlotsFull)), "capacity {capacity}");
        }
    }

    #[test]
    fn removing_frees_the_slot_and_the_key_can_come_back() {
        let mut table = SlotTable::new(8, dest4_hash);
        let key = dest4(9, 53);
        let Ok(Placed::Moves(moves)) = table.insert(key) else { panic!("placed") };
        assert_eq!(moves, vec![Move { key, from: None, to: table.slot_of(&key).unwrap() }]);
        let slot = table.remove(&key).unwrap();
        assert_eq!(table.slots.get(&slot), None);
        assert_eq!(table.remove(&key), None);
        assert!(table.insert(key).is_ok());
        check(&table);
    }

    #[test]
    fn a_failed_placement_draws_a_new_seed_and_keeps_every_key() {
        // A tiny table forces displacement chains that loop: with 4 keys in 16 slots some seeds
        // cannot place them, and the table must find one that does.
        let mut reseeds = 0;
        for host in 0..50u8 {
            let mut table = SlotTable::new(6, dest4_hash);
            let mut kernel = vec![None; table.slot_count() as usize];
            for port in 0..6 {
                let placed = table.insert(dest4(host, port)).expect("placed");
                reseeds += usize::from(matches!(placed, Placed::Reseeded { .. }));
                apply(&mut kernel, placed, &table);
            }
            check(&table);
            assert_eq!(table.placed().count(), 6);
        }
        assert!(reseeds > 0, "some of 300 insertions into 16 slots needed a new seed");
    }

    #[test]
    fn churn_keeps_the_placement_valid() {
        let mut table = SlotTable::new(500, dest6_hash);
        let mut kernel = vec![None; table.slot_count() as usize];
        let key = |n: u32| {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            addr[12..].copy_from_slice(&n.to_be_bytes());
            Dest6 { addr, port: 53, proto: IPPROTO_UDP, _pad: 0 }
        };
        for round in 0..20u32 {
            for n in 0..500 {
                if (n + round) % 3 == 0 {
                    if let Some(slot) = table.remove(&key(n)) {
                        kernel[slot as usize] = None;
                    }
                } else {
                    let placed = table.insert(key(n)).expect("room");
                    apply(&mut kernel, placed, &table);
                }
            }
            check(&table);
        }
    }

    #[test]
    fn slot_counts_leave_room() {
        assert_eq!(slot_count(0), 16);
        assert_eq!(slot_count(1_000), 2_500);
        assert_eq!(slot_count(u32::MAX), u32::MAX);
    }
}
