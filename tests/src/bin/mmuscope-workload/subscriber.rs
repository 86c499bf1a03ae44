//! Who subscribes to a scenario's mm (`--subscriber`): one KVM VM with a memslot over the scenario's memory (the
//! default), or the test module's secondary-TLB subscriber (`tests/kmod/mmuscope_mirror/`, `MIRROR_TLB_REGISTER`):
//! a classic notifier that implements only the running kernel's secondary-TLB op, as IOMMU SVA drivers do.
//!
//! The difference matters on 6.6+: KVM implements no `arch_invalidate_secondary_tlbs` (6.12 virt/kvm/kvm_main.c:917),
//! so the secondary-TLB calls the kernel makes for the mm reach no one and the agent counts none
//! ([`SecondaryTlbTruth::unreached`]); the module implements it and receives each call, and its own count is the
//! truth. Before 6.6 both implement `->invalidate_range` (KVM x86, 6.1 virt/kvm/kvm_main.c:918) and receive the same
//! calls. The brackets are the same for both (a classic notifier is on the mm's list either way); only KVM's own
//! families (`kvm_unmap_hva_range`) differ: the module is no VM.

use anyhow::{Context, Result, ensure};
use mmuscope_tests::truth::{
    GroundTruth, IntervalRange, SecondaryTlbApi, SecondaryTlbTruth, TlbScope, TlbSubscriberTruth,
};

use crate::cli::{SubscriberArgs, SubscriberKind};
use crate::mirror::{self, Mirror, TlbStatus};
use crate::region::AnonRegion;
use crate::vm::{self, GuestVm, Kvm};

/// The subscriber, registered, and the scenario's memory (a KVM memslot's, or just the mm's for the module).
pub enum Subscribed {
    /// The VM, and the test module's interval notifiers over the first pages of its memory (`--interval-pages`,
    /// `--intervals`), in address order with their intervals.
    Kvm(GuestVm, Vec<(Mirror, IntervalRange)>),
    Tlb {
        dev: Mirror,
        memory: AnonRegion,
    },
}

impl Subscribed {
    /// Registers the subscriber over `memory`, which the caller prepared; everything is opened first.
    pub fn over(args: &SubscriberArgs, memory: AnonRegion) -> Result<Self> {
        match args.subscriber {
            SubscriberKind::Kvm => {
                let kvm = Kvm::open()?;
                Ok(Self::Kvm(GuestVm::over(&kvm, memory, 1)?, Vec::new()))
            }
            SubscriberKind::Sectlb => {
                mirror::load(&args.module)?;
                let dev = Mirror::open()?;
                dev.tlb_register().context("MIRROR_TLB_REGISTER")?;
                crate::agent::await_subscription_hooks()?;
                Ok(Self::Tlb { dev, memory })
            }
        }
    }

    pub fn memory(&self) -> &AnonRegion {
        match self {
            Self::Kvm(guest, _) => &guest.memory,
            Self::Tlb { memory, .. } => memory,
        }
    }

    /// KVM VMs on the mm (the truth's `vms`).
    pub fn vms(&self) -> u32 {
        match self {
            Self::Kvm(guest, _) => guest.vms.len() as u32,
            Self::Tlb { .. } => 0,
        }
    }

    /// Adds `count` of the test module's interval notifiers over the first `pages` pages of the VM's memory
    /// (`module` loaded first), consecutive and as even as can be (one open of the module's device each, which is
    /// one `mmu_interval_notifier_insert` on this mm): brackets on those pages reach KVM and one of them, the others
    /// KVM alone. Call before the memory is used.
    pub fn add_intervals(&mut self, module: &std::path::Path, pages: usize, count: usize) -> Result<()> {
        let Self::Kvm(guest, intervals) = self else {
            anyhow::bail!("an interval notifier goes beside one KVM VM (--subscriber kvm)");
        };
        ensure!(intervals.is_empty(), "the interval notifiers are added once");
        ensure!(pages <= guest.memory.pages(), "{pages} interval pages, the memory has {}", guest.memory.pages());
        ensure!((1..=pages).contains(&count), "{count} interval notifiers over {pages} pages");
        mirror::load(module)?;
        let page = guest.memory.page_size();
        let mut first = 0;
        for i in 0..count {
            let n = pages / count + usize::from(i < pages % count);
            let (addr, len) = (guest.memory.addr() + (first * page) as u64, (n * page) as u64);
            let dev = Mirror::open()?;
            dev.register(addr, len).with_context(|| format!("MIRROR_REGISTER of interval {i}"))?;
            intervals.push((dev, IntervalRange::of(addr, len)));
            first += n;
        }
        Ok(())
    }

    /// The intervals of [`Self::add_intervals`], in address order.
    pub fn intervals(&self) -> Vec<IntervalRange> {
        match self {
            Self::Kvm(_, intervals) => intervals.iter().map(|(_, r)| *r).collect(),
            Self::Tlb { .. } => Vec::new(),
        }
    }

    /// What the interval notifiers of [`Self::add_intervals`] counted so far, summed (`None` without one).
    pub fn interval_status(&self) -> Option<Result<mirror::Status>> {
        let Self::Kvm(_, intervals) = self else { return None };
        if intervals.is_empty() {
            return None;
        }
        let sum = intervals.iter().try_fold(mirror::Status::default(), |sum, (dev, _)| {
            let s = dev.status().context("MIRROR_STATUS")?;
            anyhow::Ok(mirror::Status {
                invalidations: sum.invalidations + s.invalidations,
                confirmed_waits: sum.confirmed_waits + s.confirmed_waits,
                retries: sum.retries + s.retries,
                busy: sum.busy + s.busy,
                ..sum
            })
        });
        Some(sum)
    }

    /// Unregisters (destroys the VM), then unmaps the memory with no subscriber left; returns what the module
    /// received, read before it unregisters.
    pub fn teardown(self) -> Result<Option<TlbStatus>> {
        let (memory, received) = self.unsubscribe()?;
        memory.unmap().context("unmapping the scenario's memory")?;
        Ok(received)
    }

    /// Unregisters (destroys the VM) and hands the memory back still mapped, for a scenario that inspects it with
    /// no subscriber left; returns what the module received, read before it unregisters.
    pub fn unsubscribe(self) -> Result<(AnonRegion, Option<TlbStatus>)> {
        match self {
            Self::Kvm(GuestVm { vms, memory }, intervals) => {
                for (dev, _) in intervals {
                    dev.unregister().context("MIRROR_UNREGISTER")?;
                }
                vm::destroy_all(vms)?;
                Ok((memory, None))
            }
            Self::Tlb { dev, memory } => {
                let status = dev.tlb_status().context("MIRROR_TLB_STATUS");
                dev.tlb_unregister().context("MIRROR_TLB_UNREGISTER")?;
                Ok((memory, Some(status?)))
            }
        }
    }
}

/// Why, on an mm whose only subscribers are KVM VMs, no 6.6+ secondary-TLB call reaches an implementer.
const KVM_HAS_NO_SECONDARY_TLBS: &str =
    "KVM implements no arch_invalidate_secondary_tlbs (6.12 virt/kvm/kvm_main.c:917)";

/// `secondary` on an mm whose only subscribers are KVM VMs: from 6.6 none of the calls reaches an implementer.
pub fn kvm_only(secondary: SecondaryTlbTruth) -> SecondaryTlbTruth {
    secondary.unreached(SecondaryTlbApi::ArchInvalidateSecondaryTlbs, KVM_HAS_NO_SECONDARY_TLBS)
}

/// Completes a scenario's truth for its subscriber: `secondary` as the agent must count it (KVM from 6.6: none
/// reach it, nor make a double), and the module's counts, checked first against `secondary` for the kernel's API.
pub fn finish(truth: &mut GroundTruth, secondary: SecondaryTlbTruth, received: Option<TlbStatus>) -> Result<()> {
    let Some(status) = received else {
        truth.secondary_tlb = Some(kvm_only(secondary));
        // Nor any double made of those calls (mremap-move's whole-mm flush after a range flush).
        let api = SecondaryTlbApi::ArchInvalidateSecondaryTlbs;
        truth.double_notifications =
            truth.double_notifications.take().map(|d| d.unreached(api, KVM_HAS_NO_SECONDARY_TLBS));
        return Ok(());
    };
    eprintln!(
        "mmuscope-workload: the secondary-TLB subscriber received {} calls ({} whole-mm, {} range bytes)",
        status.calls, status.full_mm, status.range_bytes
    );
    let api = match status.api {
        1 => SecondaryTlbApi::InvalidateRange,
        2 => SecondaryTlbApi::ArchInvalidateSecondaryTlbs,
        other => anyhow::bail!("the module reports secondary-TLB API {other}"),
    };
    ensure!(
        truth.kernel_api == Some(api),
        "the module implements {api:?}, the kernel's BTF says {:?}",
        truth.kernel_api
    );
    let sources: Vec<_> = secondary.sources.iter().filter(|s| s.api == api).collect();
    let calls: u64 = sources.iter().map(|s| s.count).sum();
    ensure!(status.calls == calls, "the module received {} secondary-TLB calls, the truth says {calls}", status.calls);
    if sources.iter().all(|s| s.scope.is_some()) {
        let full: u64 = sources.iter().filter(|s| s.scope == Some(TlbScope::FullMm)).map(|s| s.count).sum();
        let bytes: u64 = sources.iter().filter(|s| s.scope == Some(TlbScope::Range)).filter_map(|s| s.bytes).sum();
        ensure!(
            (status.full_mm, status.range_bytes) == (full, bytes),
            "the module received {} whole-mm calls and {} range bytes, the truth says {full} and {bytes}",
            status.full_mm,
            status.range_bytes
        );
    }
    truth.secondary_tlb = Some(secondary);
    truth.tlb_subscriber =
        Some(TlbSubscriberTruth { api, calls: status.calls, full_mm: status.full_mm, range_bytes: status.range_bytes });
    Ok(())
}
