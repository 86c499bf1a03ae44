//! The interval-notifier family: reader waits in `mmu_interval_read_begin` and
//! `hmm_range_fault` collisions. (Brackets that reach interval subscribers are counted by the
//! bracket programs themselves when the interval fields resolve.)

use crate::kernel::FieldGroup;
use crate::probes::spec::{Family, FamilyId, Need, Traced, TracedHook};

const READ_BEGIN: &str = "mmu_interval_read_begin";
const HMM_FAULT: &str = "hmm_range_fault";

/// The family's name, as `check`, `--probes.deny` and `probe_attached{probe}` show it.
pub const ID: FamilyId = FamilyId::new("interval_notifiers");

pub static INTERVAL_NOTIFIERS: Family = Family {
    id: ID,
    description: "interval-notifier readers that waited for an invalidation, and hmm_range_fault -EBUSY collisions",
    required: false,
    traced: Traced {
        needs: &[
            Need::ModeAvailable,
            Need::Function(READ_BEGIN),
            Need::Fields(FieldGroup::IntervalNotifier),
            Need::Fields(FieldGroup::NotifierOps),
            Need::Fields(FieldGroup::MmOwner),
            Need::Fields(FieldGroup::TaskCgroup),
        ],
        hooks: &[
            TracedHook::entry_and_exit("interval_read", READ_BEGIN),
            TracedHook::exit_with_args("hmm_fault", HMM_FAULT).when(Need::Function(HMM_FAULT)),
        ],
        kprobe_degraded: "higher per-event cost",
    },
    fallbacks: &[],
};
