//! Finding a watched destination's entry on this CPU: two array slots, no lookup by key
//! (`libraflux_common`'s `slots` module has the scheme and why).

use libraflux_common::{
    Dest4, Dest6, DestEntry, SLOT_PARAMS_V4, SLOT_PARAMS_V6, Slot4, Slot6, SlotParams, candidate_slots,
    dest4_hash, dest6_hash,
};

use crate::{COUNTERS_V4, COUNTERS_V6, SLOT_PARAMS};

/// This CPU's entry for the IPv4 destination `dest`, if it is watched.
#[inline(always)]
pub(crate) fn entry_v4(dest: Dest4) -> Option<*mut DestEntry> {
    let params = params(SLOT_PARAMS_V4)?;
    let wanted = as_u64(&dest);
    for slot in candidate_slots(dest4_hash(&dest, params.seed), params.slots) {
        let slot: *mut Slot4 = COUNTERS_V4.get_ptr_mut(slot)?;
        // SAFETY: a per-CPU map value: only this CPU uses it while the program runs. The key is
        // compared as one 8-byte word (Dest4 is 8 bytes, 4-aligned; the program zeroes `_pad`,
        // and so does userspace).
        unsafe {
            if as_u64(&(*slot).key) == wanted {
                return Some(&raw mut (*slot).entry);
            }
        }
    }
    None
}

/// This CPU's entry for the IPv6 destination `dest`, if it is watched.
#[inline(always)]
pub(crate) fn entry_v6(dest: Dest6) -> Option<*mut DestEntry> {
    let params = params(SLOT_PARAMS_V6)?;
    for slot in candidate_slots(dest6_hash(&dest, params.seed), params.slots) {
        let slot: *mut Slot6 = COUNTERS_V6.get_ptr_mut(slot)?;
        // SAFETY: as for IPv4.
        unsafe {
            if (*slot).key == dest {
                return Some(&raw mut (*slot).entry);
            }
        }
    }
    None
}

/// The family's slot parameters, unless userspace has not set them yet.
#[inline(always)]
fn params(index: u32) -> Option<SlotParams> {
    let params = *SLOT_PARAMS.get(index)?;
    (params.slots != 0).then_some(params)
}

#[inline(always)]
fn as_u64(key: &Dest4) -> u64 {
    // SAFETY: Dest4 is 8 plain bytes (asserted in libraflux-common); read unaligned because it
    // is only 4-aligned.
    unsafe { (key as *const Dest4).cast::<u64>().read_unaligned() }
}
