//! The watched destinations' counters: written to and read from their slots in the per-CPU
//! arrays, where slots.rs placed them.
//!
//! Userspace can only write a per-CPU slot whole, on every CPU. So a packet counted in a slot
//! between the read and the write of a move is lost, and one counted in a slot while it is
//! rewritten for another destination may land in that destination's counts. That happens only
//! when a watch moves other destinations (rare below half full: each insertion's displacements,
//! and a new seed when they fail) or when a slot is reused.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::Hash,
};

use aya::{
    Ebpf, Pod,
    maps::{Array, MapData, PerCpuArray, PerCpuValues},
};
use libraflux_common::{
    COUNTERS_V4_MAP, COUNTERS_V6_MAP, Dest4, Dest6, DestEntry, DestKey, FlowCounters, MapKey,
    SLOT_PARAMS_MAP, SLOT_PARAMS_V4, SLOT_PARAMS_V6, Slot4, Slot6, SlotParams, dest4_hash, dest6_hash,
};

use super::{
    ObserveError,
    ebpf::{FlowCounter, map_error, missing_map},
    slots::{Placed, SlotTable, slot_count},
    source::{FlowSnapshot, monotonic_now_ns},
};

/// Both families' placements.
#[derive(Debug)]
pub(super) struct Slots {
    v4: SlotTable<Dest4>,
    v6: SlotTable<Dest6>,
    changes: SlotChanges,
}

/// How often watching a destination moved others since the counter was loaded, both families.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotChanges {
    /// Destinations moved to their other slot to make room.
    pub moved: u64,
    /// Times every destination was placed afresh under a new seed.
    pub reseeded: u64,
}

impl Slots {
    /// Empty placements for `capacity` destinations of each family.
    pub(super) fn new(capacity: u32) -> Self {
        Self {
            v4: SlotTable::new(capacity, dest4_hash),
            v6: SlotTable::new(capacity, dest6_hash),
            changes: SlotChanges::default(),
        }
    }

    /// The arrays' sizes for `capacity` destinations, to set before the object is loaded.
    pub(super) fn array_len(capacity: u32) -> u32 {
        slot_count(capacity)
    }

    /// Writes both families' parameters to the loaded object: until then the program counts
    /// nothing.
    pub(super) fn publish(&self, ebpf: &mut Ebpf) -> Result<(), ObserveError> {
        write_params(ebpf, SLOT_PARAMS_V4, &self.v4)?;
        write_params(ebpf, SLOT_PARAMS_V6, &self.v6)
    }
}

/// What differs between the families' arrays.
trait Family {
    type Key: Pod + Copy + Eq + Hash + Into<DestKey>;
    type Slot: Pod + Default;
    const MAP: &'static str;
    const PARAMS: u32;
    fn table(slots: &Slots) -> &SlotTable<Self::Key>;
    fn table_mut(slots: &mut Slots) -> &mut SlotTable<Self::Key>;
    fn slot(key: Self::Key, entry: DestEntry) -> Self::Slot;
    fn parts(slot: &Self::Slot) -> (Self::Key, DestEntry);
}

struct V4;
struct V6;

impl Family for V4 {
    type Key = Dest4;
    type Slot = Slot4;
    const MAP: &'static str = COUNTERS_V4_MAP;
    const PARAMS: u32 = SLOT_PARAMS_V4;
    fn table(slots: &Slots) -> &SlotTable<Dest4> {
        &slots.v4
    }
    fn table_mut(slots: &mut Slots) -> &mut SlotTable<Dest4> {
        &mut slots.v4
    }
    fn slot(key: Dest4, entry: DestEntry) -> Slot4 {
        Slot4 { key, entry }
    }
    fn parts(slot: &Slot4) -> (Dest4, DestEntry) {
        (slot.key, slot.entry)
    }
}

impl Family for V6 {
    type Key = Dest6;
    type Slot = Slot6;
    const MAP: &'static str = COUNTERS_V6_MAP;
    const PARAMS: u32 = SLOT_PARAMS_V6;
    fn table(slots: &Slots) -> &SlotTable<Dest6> {
        &slots.v6
    }
    fn table_mut(slots: &mut Slots) -> &mut SlotTable<Dest6> {
        &mut slots.v6
    }
    fn slot(key: Dest6, entry: DestEntry) -> Slot6 {
        Slot6 { key, _pad: 0, entry }
    }
    fn parts(slot: &Slot6) -> (Dest6, DestEntry) {
        (slot.key, slot.entry)
    }
}

impl FlowCounter {
    /// Starts counting traffic to `key`. Watching an already watched key keeps its counts. A
    /// backend tracked for SYN timeouts ([`super::ConnectSide::Attempts`]) has them counted
    /// from now on.
    pub fn watch(&mut self, key: DestKey) -> Result<(), ObserveError> {
        let entry =
            DestEntry { track_syn_timeouts: u8::from(self.tracks_attempts(&key)?), ..DestEntry::default() };
        match key.map_key() {
            MapKey::V4(key) => self.watch_in::<V4>(key, entry),
            MapKey::V6(key) => self.watch_in::<V6>(key, entry),
        }
    }

    /// Stops counting traffic to `key` and forgets its counts.
    pub fn unwatch(&mut self, key: &DestKey) -> Result<(), ObserveError> {
        match key.map_key() {
            MapKey::V4(key) => self.unwatch_in::<V4>(&key),
            MapKey::V6(key) => self.unwatch_in::<V6>(&key),
        }
    }

    /// How often watching a destination moved others' counters (see docs/observer.md): for
    /// tests and benchmarks.
    pub fn slot_changes(&self) -> SlotChanges {
        self.slots.changes
    }

    /// The destinations being watched, ordered.
    pub fn watched(&self) -> Result<BTreeSet<DestKey>, ObserveError> {
        let v4 = self.slots.v4.placed().map(|(key, _)| DestKey::from(key));
        Ok(v4.chain(self.slots.v6.placed().map(|(key, _)| DestKey::from(key))).collect())
    }

    /// The counters of every watched destination, combined over CPUs, ordered by key.
    pub fn counters(&self) -> Result<BTreeMap<DestKey, FlowCounters>, ObserveError> {
        let mut out = BTreeMap::new();
        self.collect::<V4>(&mut out)?;
        self.collect::<V6>(&mut out)?;
        Ok(out)
    }

    /// What was observed for one destination (one read of its slot, summed over CPUs); `None` if
    /// it is not watched.
    pub fn flows(&self, key: &DestKey) -> Result<Option<FlowSnapshot>, ObserveError> {
        let counters = match key.map_key() {
            MapKey::V4(key) => self.counters_of::<V4>(&key)?,
            MapKey::V6(key) => self.counters_of::<V6>(&key)?,
        };
        let (now_ns, now) = monotonic_now_ns();
        Ok(counters.map(|counters| FlowSnapshot::from_kernel(counters, now_ns, now)))
    }

    /// Sets (or clears) `track_syn_timeouts` in `backend`'s entry on every CPU, if it is watched
    /// (see the module's note on writing a slot).
    pub(super) fn mark_syn_timeouts(&mut self, backend: &DestKey, on: bool) -> Result<(), ObserveError> {
        match backend.map_key() {
            MapKey::V4(key) => self.mark_in::<V4>(&key, on),
            MapKey::V6(key) => self.mark_in::<V6>(&key, on),
        }
    }

    fn watch_in<F: Family>(&mut self, key: F::Key, entry: DestEntry) -> Result<(), ObserveError> {
        let table = F::table_mut(&mut self.slots);
        let capacity = table.capacity();
        let placed = table.insert(key).map_err(|_| ObserveError::SlotsFull { map: F::MAP, capacity })?;
        let written = self.write_placement::<F>(key, entry, placed);
        if written.is_err() {
            // The kernel's slots may not be what the table says: forget the key, so that the
            // next sync tries again. A destination the failed write was moving may go uncounted
            // until its slot is written again (by a move or a new seed, which write the key the
            // table says). A write to an array slot in range fails only for want of memory.
            F::table_mut(&mut self.slots).remove(&key);
        }
        written
    }

    fn write_placement<F: Family>(
        &mut self,
        key: F::Key,
        entry: DestEntry,
        placed: Placed<F::Key>,
    ) -> Result<(), ObserveError> {
        match placed {
            Placed::Already => Ok(()),
            Placed::Moves(moves) => {
                self.slots.changes.moved += moves.iter().filter(|step| step.from.is_some()).count() as u64;
                let mut array = per_cpu_array_mut::<F::Slot>(&mut self.ebpf, F::MAP)?;
                for step in moves {
                    let values = match step.from {
                        Some(from) => keyed::<F>(&read_slot(&array, F::MAP, from)?, step.key)?,
                        None => same_on_every_cpu(F::slot(key, entry), cpu_count()?)?,
                    };
                    write_slot(&mut array, F::MAP, step.to, values)?;
                }
                Ok(())
            }
            Placed::Reseeded { before } => {
                self.slots.changes.reseeded += 1;
                self.rewrite::<F>(key, entry, &before, cpu_count()?)
            }
        }
    }

    /// After a new seed: every placed key's slot read where it was, the new parameters written,
    /// then every key written where it is now and the slots left empty cleared.
    fn rewrite<F: Family>(
        &mut self,
        key: F::Key,
        entry: DestEntry,
        before: &HashMap<F::Key, u32>,
        cpus: usize,
    ) -> Result<(), ObserveError> {
        let mut values: HashMap<F::Key, PerCpuValues<F::Slot>> = HashMap::with_capacity(before.len() + 1);
        {
            let array = per_cpu_array_mut::<F::Slot>(&mut self.ebpf, F::MAP)?;
            for (placed, slot) in before {
                values.insert(*placed, keyed::<F>(&read_slot(&array, F::MAP, *slot)?, *placed)?);
            }
        }
        values.insert(key, same_on_every_cpu(F::slot(key, entry), cpus)?);
        write_params(&mut self.ebpf, F::PARAMS, F::table(&self.slots))?;
        let table = F::table(&self.slots);
        let mut array = per_cpu_array_mut::<F::Slot>(&mut self.ebpf, F::MAP)?;
        let mut filled = BTreeSet::new();
        for (placed, slot) in table.placed() {
            let slot_values = values.remove(&placed).expect("every placed key was read or is the new one");
            write_slot(&mut array, F::MAP, slot, slot_values)?;
            filled.insert(slot);
        }
        for slot in before.values().filter(|slot| !filled.contains(*slot)) {
            write_slot(&mut array, F::MAP, *slot, same_on_every_cpu(F::Slot::default(), cpus)?)?;
        }
        tracing::debug!(map = F::MAP, keys = filled.len(), "counter slots placed under a new seed");
        Ok(())
    }

    fn unwatch_in<F: Family>(&mut self, key: &F::Key) -> Result<(), ObserveError> {
        let Some(slot) = F::table_mut(&mut self.slots).remove(key) else { return Ok(()) };
        let empty = same_on_every_cpu(F::Slot::default(), cpu_count()?)?;
        write_slot(&mut per_cpu_array_mut::<F::Slot>(&mut self.ebpf, F::MAP)?, F::MAP, slot, empty)
    }

    fn collect<F: Family>(&self, out: &mut BTreeMap<DestKey, FlowCounters>) -> Result<(), ObserveError> {
        let array = per_cpu_array::<F::Slot>(&self.ebpf, F::MAP)?;
        for (key, slot) in F::table(&self.slots).placed() {
            out.insert(key.into(), sum_cpus::<F>(&read_slot(&array, F::MAP, slot)?));
        }
        Ok(())
    }

    fn counters_of<F: Family>(&self, key: &F::Key) -> Result<Option<FlowCounters>, ObserveError> {
        let Some(slot) = F::table(&self.slots).slot_of(key) else { return Ok(None) };
        let array = per_cpu_array::<F::Slot>(&self.ebpf, F::MAP)?;
        Ok(Some(sum_cpus::<F>(&read_slot(&array, F::MAP, slot)?)))
    }

    fn mark_in<F: Family>(&mut self, key: &F::Key, on: bool) -> Result<(), ObserveError> {
        let Some(slot) = F::table(&self.slots).slot_of(key) else { return Ok(()) };
        let mut array = per_cpu_array_mut::<F::Slot>(&mut self.ebpf, F::MAP)?;
        let current = read_slot(&array, F::MAP, slot)?;
        if current.iter().all(|cpu| F::parts(cpu).1.track_syn_timeouts == u8::from(on)) {
            return Ok(());
        }
        let marked: Vec<F::Slot> = current
            .iter()
            .map(|cpu| {
                let (key, entry) = F::parts(cpu);
                F::slot(key, DestEntry { track_syn_timeouts: u8::from(on), ..entry })
            })
            .collect();
        let marked = PerCpuValues::try_from(marked).map_err(ObserveError::PerCpuValues)?;
        write_slot(&mut array, F::MAP, slot, marked)
    }
}

/// `values` (one slot on every CPU) with `key` as the slot's destination: what a move writes, so
/// that the slot holds the key the placement says whatever the slot read held.
fn keyed<F: Family>(
    values: &PerCpuValues<F::Slot>,
    key: F::Key,
) -> Result<PerCpuValues<F::Slot>, ObserveError> {
    let slots: Vec<F::Slot> = values.iter().map(|cpu| F::slot(key, F::parts(cpu).1)).collect();
    PerCpuValues::try_from(slots).map_err(ObserveError::PerCpuValues)
}

/// One destination's counters combined over CPUs.
fn sum_cpus<F: Family>(values: &PerCpuValues<F::Slot>) -> FlowCounters {
    values.iter().fold(FlowCounters::default(), |sum, cpu| sum.add(F::parts(cpu).1.counters))
}

fn write_params<K: Copy + Eq + Hash>(
    ebpf: &mut Ebpf,
    index: u32,
    table: &SlotTable<K>,
) -> Result<(), ObserveError> {
    let map = ebpf.map_mut(SLOT_PARAMS_MAP).ok_or(missing_map(SLOT_PARAMS_MAP))?;
    let mut params: Array<&mut MapData, SlotParams> =
        Array::try_from(map).map_err(|source| map_error("opening", SLOT_PARAMS_MAP, source))?;
    let value = SlotParams { seed: table.seed(), slots: table.slot_count(), _pad: 0 };
    params
        .set(index, value, 0)
        .map_err(|source| map_error("writing the slot parameters", SLOT_PARAMS_MAP, source))
}

fn per_cpu_array<'a, V: Pod>(
    ebpf: &'a Ebpf,
    name: &'static str,
) -> Result<PerCpuArray<&'a MapData, V>, ObserveError> {
    let map = ebpf.map(name).ok_or(missing_map(name))?;
    PerCpuArray::try_from(map).map_err(|source| map_error("opening", name, source))
}

fn per_cpu_array_mut<'a, V: Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<PerCpuArray<&'a mut MapData, V>, ObserveError> {
    let map = ebpf.map_mut(name).ok_or(missing_map(name))?;
    PerCpuArray::try_from(map).map_err(|source| map_error("opening", name, source))
}

fn read_slot<V: Pod, T: std::borrow::Borrow<MapData>>(
    array: &PerCpuArray<T, V>,
    name: &'static str,
    slot: u32,
) -> Result<PerCpuValues<V>, ObserveError> {
    array.get(&slot, 0).map_err(|source| map_error("reading a counter slot", name, source))
}

fn write_slot<V: Pod>(
    array: &mut PerCpuArray<&mut MapData, V>,
    name: &'static str,
    slot: u32,
    values: PerCpuValues<V>,
) -> Result<(), ObserveError> {
    array.set(slot, values, 0).map_err(|source| map_error("writing a counter slot", name, source))
}

fn same_on_every_cpu<V: Pod>(value: V, cpus: usize) -> Result<PerCpuValues<V>, ObserveError> {
    PerCpuValues::try_from(vec![value; cpus]).map_err(ObserveError::PerCpuValues)
}

pub(super) fn cpu_count() -> Result<usize, ObserveError> {
    aya::util::nr_cpus().map_err(|(path, source)| ObserveError::Cpus { path, source })
}
