//! Holding back the node's refusals of a VIP while its service's scheduler changes in place.
//!
//! Debian 12's kernel (6.1) changes a service's scheduler in three steps (`ip_vs_edit_service`):
//! unbind the old one and set `svc->scheduler` to NULL, wait for an RCU grace period, bind the new
//! one. A new connection's first packet in between finds no scheduler, and `ip_vs_leave` answers
//! it with an ICMP port unreachable: the client gets ECONNREFUSED. While a VIP is shielded, the
//! counter program drops those refusals on their way out, so a TCP client retransmits its SYN
//! (after its initial retransmission timeout, 1 s on Linux) and connects; a UDP client's datagram
//! is lost instead of refused, and the client's own timeout and retry apply.
//!
//! The program sees a refusal only at the egress of the interface it leaves by, the client-facing
//! one: a shield whose counter is not attached there holds nothing back (docs/observer.md).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError, PerCpuArray},
};
use libraflux_common::{Dest4, Dest6, DestKey, MapKey, SHIELD_V4_MAP, SHIELD_V6_MAP, SHIELDED_MAP, Shield};

use super::{
    ObserveError,
    ebpf::{map_error, missing_map},
    source::monotonic_now_ns,
};
use crate::model::ServiceKey;

/// The shield maps of one loaded counter program ([`super::FlowCounter::refusal_shield`]).
/// Clones share them; it may be used from any thread.
#[derive(Clone, Debug)]
pub struct RefusalShield {
    maps: Arc<Mutex<Maps>>,
}

struct Maps {
    v4: HashMap<MapData, Dest4, Shield>,
    v6: HashMap<MapData, Dest6, Shield>,
    shielded: PerCpuArray<MapData, u64>,
    /// Live holds per VIP: how many, and the latest end any of them asked for. The kernel entry
    /// goes when the last hold is released.
    holds: BTreeMap<DestKey, (usize, u64)>,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maps").field("holds", &self.holds).finish_non_exhaustive()
    }
}

impl RefusalShield {
    /// A bound for one scheduler change: `ip_vs_edit_service` waits for one RCU grace period
    /// (milliseconds), so a hold that outlives this is a caller that never released it.
    pub const SCHEDULER_CHANGE: Duration = Duration::from_secs(10);

    /// Takes the shield maps out of a loaded object (the program keeps its own references).
    pub(super) fn take_from(ebpf: &mut Ebpf) -> Result<Self, ObserveError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(missing_map(name));
        let opening = |name| move |source| map_error("opening", name, source);
        let maps = Maps {
            v4: HashMap::try_from(take(SHIELD_V4_MAP)?).map_err(opening(SHIELD_V4_MAP))?,
            v6: HashMap::try_from(take(SHIELD_V6_MAP)?).map_err(opening(SHIELD_V6_MAP))?,
            shielded: PerCpuArray::try_from(take(SHIELDED_MAP)?).map_err(opening(SHIELDED_MAP))?,
            holds: BTreeMap::new(),
        };
        Ok(Self { maps: Arc::new(Mutex::new(maps)) })
    }

    /// Shields `vip` (its address, protocol and port) until the returned hold is released or
    /// dropped, and at most for `at_most` whatever happens (the program then ignores the entry:
    /// a process that dies holding it leaves no lasting drop behind). Holding a VIP that is
    /// already held keeps it shielded until the last hold ends.
    pub fn hold(&self, vip: DestKey, at_most: Duration) -> Result<ShieldHold, ObserveError> {
        let (now_ns, _) = monotonic_now_ns();
        let until_ns = now_ns.saturating_add(u64::try_from(at_most.as_nanos()).unwrap_or(u64::MAX));
        let mut maps = self.lock();
        let (holds, held_until_ns) = maps.holds.get(&vip).copied().unwrap_or((0, 0));
        let until_ns = until_ns.max(held_until_ns);
        maps.write(vip, until_ns)?;
        maps.holds.insert(vip, (holds + 1, until_ns));
        Ok(ShieldHold { shield: self.clone(), vip, released: false })
    }

    /// [`RefusalShield::hold`] for the VIP of an address service, for
    /// [`RefusalShield::SCHEDULER_CHANGE`]. `None` for a firewall-mark service: its packets are
    /// matched by mark, so no address and port name its refusals.
    pub fn hold_service(&self, key: &ServiceKey) -> Result<Option<ShieldHold>, ObserveError> {
        let ServiceKey::Addr { protocol, addr, port } = *key else { return Ok(None) };
        self.hold(DestKey::new(addr, port, protocol.number()), Self::SCHEDULER_CHANGE).map(Some)
    }

    /// The VIPs shielded in the kernel maps now (expired entries included until released).
    pub fn shielded(&self) -> Result<BTreeSet<DestKey>, ObserveError> {
        let maps = self.lock();
        let mut out = BTreeSet::new();
        for key in maps.v4.keys() {
            out.insert(key.map_err(|source| map_error("listing keys", SHIELD_V4_MAP, source))?.into());
        }
        for key in maps.v6.keys() {
            out.insert(key.map_err(|source| map_error("listing keys", SHIELD_V6_MAP, source))?.into());
        }
        Ok(out)
    }

    /// How many refusals the program has dropped since it was loaded, over all CPUs.
    pub fn held_back(&self) -> Result<u64, ObserveError> {
        let values =
            self.lock().shielded.get(&0, 0).map_err(|source| map_error("reading", SHIELDED_MAP, source))?;
        Ok(values.iter().sum())
    }

    fn release(&self, vip: DestKey) -> Result<(), ObserveError> {
        let mut maps = self.lock();
        match maps.holds.get(&vip).copied() {
            Some((holds, until_ns)) if holds > 1 => {
                maps.holds.insert(vip, (holds - 1, until_ns));
                Ok(())
            }
            _ => {
                maps.holds.remove(&vip);
                maps.remove(vip)
            }
        }
    }

    /// The maps stay consistent whatever a panicking holder was doing: every change is one
    /// syscall, and the book of holds is updated after it.
    fn lock(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Maps {
    fn write(&mut self, vip: DestKey, until_ns: u64) -> Result<(), ObserveError> {
        let shield = Shield { until_ns };
        match vip.map_key() {
            MapKey::V4(key) => self.v4.insert(key, shield, 0).map_err(inserting(SHIELD_V4_MAP)),
            MapKey::V6(key) => self.v6.insert(key, shield, 0).map_err(inserting(SHIELD_V6_MAP)),
        }
    }

    fn remove(&mut self, vip: DestKey) -> Result<(), ObserveError> {
        let (removed, name) = match vip.map_key() {
            MapKey::V4(key) => (self.v4.remove(&key), SHIELD_V4_MAP),
            MapKey::V6(key) => (self.v6.remove(&key), SHIELD_V6_MAP),
        };
        match removed {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(map_error("removing a shielded VIP", name, source)),
        }
    }
}

fn inserting(name: &'static str) -> impl FnOnce(MapError) -> ObserveError {
    move |source| map_error("inserting a shielded VIP (full?)", name, source)
}

/// One hold on a shielded VIP: the shield lasts while it lives. Dropping it releases it (a
/// failure is logged); [`ShieldHold::release`] reports the failure instead.
#[derive(Debug)]
#[must_use = "the VIP is shielded only while the hold lives"]
pub struct ShieldHold {
    shield: RefusalShield,
    vip: DestKey,
    released: bool,
}

impl ShieldHold {
    pub fn vip(&self) -> DestKey {
        self.vip
    }

    pub fn release(mut self) -> Result<(), ObserveError> {
        self.released = true;
        self.shield.release(self.vip)
    }
}

impl Drop for ShieldHold {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Err(err) = self.shield.release(self.vip) {
            tracing::warn!(error = %err, vip = %self.vip.ip(), port = self.vip.port, "cannot end a refusal shield; it ends at its bound");
        }
    }
}
