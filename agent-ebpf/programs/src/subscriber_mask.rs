//! The `subscriber` dimension of brackets and doubles: which subscriber kinds an invalidation reached, as a mask
//! over `SUBSCRIBER_SLOTS` (see [`mmuscope_abi::subscriber_mask`]). An ops gets a slot the first time a program
//! meets it, so a driver loaded after the agent started is told apart without a sweep or a restart; user space names
//! each slot from its callback.

use aya_ebpf::{macros::map, maps::HashMap};
use mmuscope_abi::{KernelLayout, SubscriberSlot, subscriber_mask};

use crate::{cgroup::read, interval};

/// Slot index → the ops holding it. Written only by [`slot_of`], with `BPF_NOEXIST`, so two CPUs meeting the same
/// new ops agree on its slot.
#[map]
static SUBSCRIBER_SLOTS: HashMap<u32, SubscriberSlot> = HashMap::with_max_entries(subscriber_mask::SLOTS, 0);

/// ops → slot index: the hot path's one lookup per subscriber.
#[map]
static SUBSCRIBER_BITS: HashMap<u64, u32> = HashMap::with_max_entries(64, 0);

/// Most notifiers walked on an mm's list (KVM registers one per VM).
pub const MAX_LISTED: u32 = 8;

const BPF_NOEXIST: u64 = 1;

/// The bit of `ops`: its slot, taken now if it has none, with the callback `callback` reads (only then).
#[inline(always)]
fn bit_of(ops: u64, callback: impl FnOnce() -> u64) -> u32 {
    if ops == 0 {
        return subscriber_mask::OTHER;
    }
    if let Some(slot) = unsafe { SUBSCRIBER_BITS.get(ops) } {
        return 1 << (*slot & 31);
    }
    let wanted = SubscriberSlot { ops, callback: callback() };
    for slot in 0..subscriber_mask::SLOTS {
        let taken = SUBSCRIBER_SLOTS.insert(slot, wanted, BPF_NOEXIST).is_ok()
            || unsafe { SUBSCRIBER_SLOTS.get(slot) }.is_some_and(|s| s.ops == ops);
        if taken {
            let _ = SUBSCRIBER_BITS.insert(ops, slot, 0);
            return 1 << slot;
        }
    }
    subscriber_mask::OTHER
}

/// The bit of a classic notifier's `ops`, named by its first non-NULL callback of `invalidate_range_start`, `_end`
/// and the secondary-TLB op (the order the inventory names subscriptions in).
#[inline(always)]
pub fn notifier_bit(l: &KernelLayout, ops: u64) -> u32 {
    bit_of(ops, || {
        let mut callback = 0;
        for offset in [l.ops_start, l.ops_end, l.ops_secondary_tlb] {
            callback = unsafe { read::<u64>(ops, offset) }.unwrap_or(0);
            if callback != 0 {
                break;
            }
        }
        callback
    })
}

/// The subscribers an invalidation of `[start, end)` on `mm` reaches: every notifier on the mm's list (they see
/// every range) and the interval notifier the tree search of `interval::itree_first` finds intersecting the range
/// (only the first: intervals of two kinds intersecting one range count as the first's kind). 0: no one (the
/// subscriptions struct outlives its subscribers, and `has_itree` stays set once the mm used an interval notifier,
/// so neither tells).
#[inline(always)]
pub fn reached(l: &KernelLayout, mm: u64, start: u64, end: u64) -> u32 {
    let Ok(subs) = (unsafe { read::<u64>(mm, l.mm_notifier_subscriptions) }) else { return 0 };
    if subs == 0 {
        return 0;
    }
    let mut mask = 0;
    if let Ok(mut node) = unsafe { read::<u64>(subs, l.subscriptions_list) } {
        for _ in 0..MAX_LISTED {
            if node == 0 {
                break;
            }
            let notifier = node - l.notifier_hlist as u64;
            mask |= match unsafe { read::<u64>(notifier, l.notifier_ops) } {
                Ok(ops) => notifier_bit(l, ops),
                Err(()) => subscriber_mask::OTHER,
            };
            node = unsafe { read::<u64>(node, l.hlist_next) }.unwrap_or(0);
        }
    }
    let Ok(root) = (unsafe { read::<u64>(subs, l.subscriptions_itree_root) }) else { return mask };
    mask | match interval::itree_first(l, root, start, end) {
        interval::Hit::Miss => 0,
        interval::Hit::Unknown => subscriber_mask::OTHER,
        interval::Hit::Node(node) => interval_bit(l, node),
    }
}

/// Whether [`reached`] would find anyone, without naming them (no slot lookup): the end of a bracket that was not
/// in flight asks only this, next to its zeroed histogram on the stack.
#[inline(always)]
pub fn any(l: &KernelLayout, mm: u64, start: u64, end: u64) -> bool {
    let Ok(subs) = (unsafe { read::<u64>(mm, l.mm_notifier_subscriptions) }) else { return false };
    if subs == 0 {
        return false;
    }
    if unsafe { read::<u64>(subs, l.subscriptions_list) }.is_ok_and(|first| first != 0) {
        return true;
    }
    let Ok(root) = (unsafe { read::<u64>(subs, l.subscriptions_itree_root) }) else { return false };
    interval::itree_intersects(l, root, start, end)
}

/// The bit of the interval notifier whose tree node is `node`, named by its `ops->invalidate`.
#[inline(always)]
fn interval_bit(l: &KernelLayout, node: u64) -> u32 {
    let sub = node - l.itree_node_to_interval_sub as u64;
    let Ok(ops) = (unsafe { read::<u64>(sub, l.interval_sub_ops) }) else { return subscriber_mask::OTHER };
    bit_of(ops, || unsafe { read::<u64>(ops, l.interval_ops_invalidate) }.unwrap_or(0))
}
