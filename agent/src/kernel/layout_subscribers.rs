//! The [`SubscriberLayout`] of the subscriber inventory, resolved from BTF like the rest of
//! the layout (field group [`FieldGroup::Subscribers`]).
//!
//! Two views of pinning per mm:
//! - `mm->pinned_vm`, a BTF field: pages pinned long-term and accounted there (io_uring fixed buffers, RDMA,
//!   vDPA); it drops when they are unpinned. VFIO type1 and iommufd account in `locked_vm` instead.
//! - the has-pinned flag, what fork() tests before copying maybe-pinned pages eagerly: set by every `FOLL_PIN`
//!   (VFIO included) and never cleared. On 5.9–5.12 it is the BTF field `atomic_t has_pinned`; from 5.13 it is
//!   `MMF_HAS_PINNED` in `mm->flags`, a `#define` that BTF does not carry, so its bit number comes from the kernel
//!   release ([`mmf_has_pinned_bit`]); the vm and host tiers check it on every kernel they run.

use mmuscope_abi::{HAS_PINNED_UNKNOWN, HAS_PINNED_WORD, NO_CHANGE_PTE, SubscriberLayout};

use super::{
    btf::BtfError,
    fields::{FieldGroup, Resolver},
};

pub(super) fn resolve(r: &mut Resolver<'_>) -> Result<SubscriberLayout, BtfError> {
    use FieldGroup::Subscribers as S;
    let itree = r.offset(S, "mmu_notifier_subscriptions", "itree", None)?;
    let rb_node = r.offset(S, "rb_root_cached", "rb_root.rb_node", Some(8))?;
    let leftmost = r.offset(S, "rb_root_cached", "rb_leftmost", Some(8))?;
    let (mm_has_pinned, has_pinned_bit) = has_pinned(r, &super::release())?;
    Ok(SubscriberLayout {
        task_pid: r.offset(S, "task_struct", "pid", Some(4))?,
        task_tgid: r.offset(S, "task_struct", "tgid", Some(4))?,
        task_comm: r.offset(S, "task_struct", "comm", Some(16))?,
        mm_pinned_vm: r.offset(S, "mm_struct", "pinned_vm", Some(8))?,
        mm_has_pinned,
        has_pinned_bit,
        itree_root: itree + rb_node,
        itree_leftmost: itree + leftmost,
        ops_release: r.offset(S, "mmu_notifier_ops", "release", Some(8))?,
        ops_start: r.offset(S, "mmu_notifier_ops", "invalidate_range_start", Some(8))?,
        ops_end: r.offset(S, "mmu_notifier_ops", "invalidate_range_end", Some(8))?,
        // Optional: the op was removed in 2024; its absence is no missing field.
        ops_change_pte: r.btf().member("mmu_notifier_ops", "change_pte")?.map_or(NO_CHANGE_PTE, |f| f.offset),
    })
}

/// Where the has-pinned flag is on this kernel: the 5.9–5.12 field, else `mm->flags` with the bit of `release`.
/// An unknown bit leaves the flag unread ([`HAS_PINNED_UNKNOWN`]) and says so; it never disables the inventory.
fn has_pinned(r: &mut Resolver<'_>, release: &str) -> Result<(u32, u32), BtfError> {
    if let Some(f) = r.btf().member("mm_struct", "has_pinned")?.filter(|f| f.size == 4) {
        return Ok((f.offset, HAS_PINNED_WORD));
    }
    let flags = r.btf().member("mm_struct", "flags")?;
    match (flags, mmf_has_pinned_bit(release)) {
        (Some(f), Some(bit)) => Ok((f.offset, bit)),
        _ => {
            tracing::warn!(
                release,
                "the has-pinned flag of mms is not known on this kernel; has_pinned_mms stays empty"
            );
            Ok((0, HAS_PINNED_UNKNOWN))
        }
    }
}

/// `MMF_HAS_PINNED`'s bit in `mm->flags` for a kernel release (`uname -r`): 28 from 5.13 (where the flag replaced
/// `mm->has_pinned`) to 5.19, 27 from 6.0 (`MMF_OOM_VICTIM` was removed below it; include/linux/sched/coredump.h,
/// later mm_types.h). `None` for other releases or an unparsable one.
pub(super) fn mmf_has_pinned_bit(release: &str) -> Option<u32> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    match (major, minor) {
        (5, 13..) => Some(28),
        (6.., _) => Some(27),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::mmf_has_pinned_bit;

    #[test]
    fn has_pinned_bit_by_release() {
        for (release, bit) in [
            ("5.10.0-35-amd64", None),
            ("5.13.0", Some(28)),
            ("5.19.17-arch1", Some(28)),
            ("6.0.0", Some(27)),
            ("6.1.0-57-amd64", Some(27)),
            ("6.12.118+deb13-amd64", Some(27)),
            ("6.18.44-fc-v1252", Some(27)),
            ("7.2.13+deb14-amd64", Some(27)),
            ("4.19.0", None),
            ("", None),
            ("garbage", None),
        ] {
            assert_eq!(mmf_has_pinned_bit(release), bit, "{release}");
        }
    }
}
