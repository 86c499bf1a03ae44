//! `GET /api/v1/subscribers`: the subscriber inventory (see `crate::subscribers`), one entry
//! per address space with subscriptions, long-term pinned pages or the has-pinned flag.

use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    cgroups::{CgroupNames, HierarchyKind},
    subscribers::Inventory,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscribersView {
    /// False when the `subscribers` probe family is not attached (see `/api/v1/probes`); the list is then empty.
    pub available: bool,
    /// Seconds since the inventory was taken (null: never). It is re-taken on demand: when a subscription changed
    /// (fentry/kprobe modes) or when older than a second (tracepoint mode).
    pub age_seconds: Option<f64>,
    /// Why the last sweep failed, if it did (the previous inventory is served).
    pub error: Option<String>,
    /// A callback met for the first time (a module loaded after the agent started) is still being named from
    /// kallsyms, which is read off the request path: its subscription reads `unknown` until a later request.
    pub symbols_pending: bool,
    /// Page size used for `pinned_bytes`.
    pub page_size: u64,
    /// The fork-copy family's per-page hook, attached only while some mm has the has-pinned flag.
    pub fork_copy_hook: HookGroupView,
    /// The subscription hooks (operation boundaries, TLB-gather and cause windows), attached only while some mm has
    /// notifier subscriptions (classic or interval).
    pub subscription_hooks: HookGroupView,
    pub mms: Vec<MmView>,
}

/// One group of hooks attached on demand (see `probes::arming`).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct HookGroupView {
    /// Attached now. The fork-copy hook: a fork that copies pinned pages is counted; detached while no mm has the
    /// has-pinned flag, a fork of an mm flagged since the last sweep then counts in `mmuscope_fork_unobserved_total`
    /// (and attaches it). The subscription hooks: detached while no mm has subscriptions; a registration attaches
    /// them within milliseconds.
    pub attached: bool,
    /// Why it stays attached whatever the inventory says (`--probes.keep-attached`, which kprobe mode and fentry on
    /// 5.10 need for these hooks' families to attach at all, ...), if it does.
    pub always: Option<String>,
    /// Why none of them is attached in this mode, if none is: no family with such a hook is attached (tracepoint mode
    /// has none; kprobe mode and fentry on 5.10 switch those families off unless `--probes.keep-attached`).
    pub none_attached: Option<String>,
    /// Attach and detach transitions since start-up.
    pub transitions: u64,
    /// A switch is wished for or under way: an attach shows in `attached` once done, a detach as soon as it is wished
    /// for; `transitions` counts either once done.
    pub switching: bool,
}

impl From<&crate::probes::ArmingView> for HookGroupView {
    fn from(v: &crate::probes::ArmingView) -> Self {
        Self {
            attached: v.attached,
            always: v.always.clone(),
            none_attached: v.none_attached.clone(),
            transitions: v.transitions,
            switching: v.switching,
        }
    }
}

/// One address space, under the first thread-group leader using it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MmView {
    pub pid: u32,
    pub comm: String,
    /// Memory cgroup path of the mm's owner (not subject to `--max-cgroups`), `unknown` if not resolved.
    pub cgroup: String,
    pub cgroup_id: u64,
    pub hierarchy: HierarchyKind,
    /// Distinct subscriber kinds, sorted (e.g. `["kvm"]`).
    pub kinds: Vec<String>,
    pub subscriptions: Vec<SubscriptionView>,
    /// `mm->pinned_vm` in bytes: memory pinned long-term and accounted there (io_uring fixed buffers, RDMA, vDPA;
    /// VFIO type1 and iommufd account in `locked_vm` and are not included).
    pub pinned_bytes: u64,
    /// The mm carries the has-pinned flag (`MMF_HAS_PINNED`; 5.9–5.12 `mm->has_pinned`): some page was pinned with
    /// `FOLL_PIN` (VFIO included) while it lived, so fork() copies its maybe-pinned pages eagerly. Never cleared.
    pub has_pinned: bool,
    /// More notifiers are registered than the inventory walks (16); only those are listed.
    pub truncated: bool,
    /// More interval notifiers are registered than the inventory walks (128), or the tree could not be walked
    /// (see `mmuscope_subscriber_inventory_truncated_mms`); only the first ones in address order are listed.
    pub intervals_truncated: bool,
}

/// One registered `struct mmu_notifier` (e.g. one per KVM VM), or one interval notifier.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// From the callback symbols, e.g. `kvm`; `interval` for interval notifiers of unknown origin.
    pub kind: String,
    /// An interval notifier (`struct mmu_interval_notifier`, e.g. a GPU user pointer or an RDMA ODP region), listed
    /// in address order after the classic notifiers.
    pub interval: bool,
    /// Interval notifiers: the first and last byte address of the interval (inclusive), as the kernel's interval tree
    /// stores them; null for classic notifiers.
    pub start: Option<u64>,
    pub last: Option<u64>,
    /// The callbacks it implements (non-NULL ops), of those the inventory reads.
    pub callbacks: Vec<CallbackView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackView {
    /// `invalidate_range_start`, `invalidate_range_end`, `invalidate_range` (before 6.6),
    /// `arch_invalidate_secondary_tlbs` (6.6+), `release`, `change_pte` (kernels whose `mmu_notifier_ops` has it:
    /// before 6.10) or `invalidate` (interval notifiers).
    pub callback: String,
    /// Kernel text symbol, with ` [module]` for module code; null if kallsyms does not name it.
    pub symbol: Option<String>,
    /// Its duration is measured (`mmuscope_subscriber_callback_duration_seconds`): an invalidation callback known
    /// at start-up, or met later with `--probes.late-callbacks`.
    pub timed: bool,
}

pub fn view(inv: Option<&Inventory>, names: &CgroupNames, page_size: u64) -> SubscribersView {
    let Some(inv) = inv else {
        let mms = Vec::new();
        return SubscribersView {
            available: false,
            age_seconds: None,
            error: None,
            symbols_pending: false,
            page_size,
            fork_copy_hook: HookGroupView::default(),
            subscription_hooks: HookGroupView::default(),
            mms,
        };
    };
    let mms = inv
        .mms
        .iter()
        .map(|m| {
            let which = HierarchyKind::of_key(m.cgroup_flags);
            let mut kinds: Vec<String> = m.subscriptions.iter().map(|s| s.kind.clone()).collect();
            kinds.sort();
            kinds.dedup();
            let subscriptions = m
                .subscriptions
                .iter()
                .map(|s| SubscriptionView {
                    kind: s.kind.clone(),
                    interval: s.interval.is_some(),
                    start: s.interval.map(|(start, _)| start),
                    last: s.interval.map(|(_, last)| last),
                    callbacks: s
                        .callbacks
                        .iter()
                        .map(|c| CallbackView {
                            callback: c.slot.to_string(),
                            symbol: c.symbol.clone(),
                            timed: inv.timed_callbacks.contains(&c.address),
                        })
                        .collect(),
                })
                .collect();
            MmView {
                pid: m.pid,
                comm: m.comm.clone(),
                cgroup: names.info(which, m.cgroup_id).map_or_else(|| "unknown".to_string(), |i| i.path.clone()),
                cgroup_id: m.cgroup_id,
                hierarchy: which,
                kinds,
                subscriptions,
                pinned_bytes: m.pinned_pages.saturating_mul(page_size),
                has_pinned: m.has_pinned,
                truncated: m.truncated,
                intervals_truncated: m.intervals_truncated,
            }
        })
        .collect();
    SubscribersView {
        available: true,
        age_seconds: inv.swept_at.map(|t| t.elapsed().as_secs_f64()),
        error: inv.error.clone(),
        symbols_pending: inv.symbols_pending,
        page_size,
        fork_copy_hook: (&inv.fork_copy_hook).into(),
        subscription_hooks: (&inv.subscription_hooks).into(),
        mms,
    }
}
