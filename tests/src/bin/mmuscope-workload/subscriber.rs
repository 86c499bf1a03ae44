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
use mmuscope_tests::truth::{GroundTruth, SecondaryTlbApi, SecondaryTlbTruth, TlbScope, TlbSubscriberTruth};

use crate::cli::{SubscriberArgs, SubscriberKind};
use crate::mirror::{self, Mirror, TlbStatus};
use crate::region::AnonRegion;
use crate::vm::{self, GuestVm, Kvm};

/// The subscriber, registered, and the scenario's memory (a KVM memslot's, or just the mm's for the module).
pub enum Subscribed {
    /// The VM, and the test module's interval notifier over the first pages of its memory (`--interval-pages`).
    Kvm(GuestVm, Option<Mirror>),
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
                Ok(Self::Kvm(GuestVm::over(&kvm, memory, 1)?, None))
            }
            SubscriberKind::Sectlb => {
                mirror::load(&args.module)?;
                let dev = Mirror::open()?;
                dev.tlb_register().context("MIRROR_TLB_REGISTER")?;
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

    /// Adds the test module's interval notifier over the first `pages` pages of the VM's memory (`module` loaded
    /// first): brackets on those pages reach both subscribers, the others KVM alone. Call before the memory is used.
    pub fn add_interval(&mut self, module: &std::path::Path, pages: usize) -> Result<()> {
        let Self::Kvm(guest, interval @ None) = self else {
            anyhow::bail!("an interval notifier goes beside one KVM VM (--subscriber kvm)");
        };
        ensure!(pages <= guest.memory.pages(), "{pages} interval pages, the memory has {}", guest.memory.pages());
        mirror::load(module)?;
        let dev = Mirror::open()?;
        dev.register(guest.memory.addr(), (pages * guest.memory.page_size()) as u64).context("MIRROR_REGISTER")?;
        *interval = Some(dev);
        Ok(())
    }

    /// What the interval notifier of [`Self::add_interval`] counted so far (`None` without one).
    pub fn interval_status(&self) -> Option<Result<mirror::Status>> {
        match self {
            Self::Kvm(_, Some(dev)) => Some(dev.status().context("MIRROR_STATUS")),
            _ => None,
        }
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
            Self::Kvm(GuestVm { vms, memory }, interval) => {
                if let Some(dev) = interval {
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

/// `secondary` on an mm whose only subscribers are KVM VMs: from 6.6 none of the calls reaches an implementer.
pub fn kvm_only(secondary: SecondaryTlbTruth) -> SecondaryTlbTruth {
    secondary.unreached(
        SecondaryTlbApi::ArchInvalidateSecondaryTlbs,
        "KVM implements no arch_invalidate_secondary_tlbs (6.12 virt/kvm/kvm_main.c:917)",
    )
}

/// Completes a scenario's truth for its subscriber: `secondary` as the agent must count it (KVM from 6.6: none
/// reach it), and the module's counts, checked first against `secondary` for the kernel's API.
pub fn finish(truth: &mut GroundTruth, secondary: SecondaryTlbTruth, received: Option<TlbStatus>) -> Result<()> {
    let Some(status) = received else {
        truth.secondary_tlb = Some(kvm_only(secondary));
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
