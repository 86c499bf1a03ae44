//! `kvm-mprotect`: one VM over 2 MiB of guest memory (one whole, 2 MiB-aligned, isolated VMA, every page written);
//! N × (mprotect all of it read-only, mprotect it read-write, write one page).
//!
//! Each mprotect is exactly one `MMU_NOTIFY_PROTECTION_VMA` bracket: `mprotect_fixup → change_protection →
//! change_protection_range`, which opens the bracket lazily, once, at the first populated entry:
//! * 6.1: in `change_pmd_range`, once per PUD-sized range that has a populated PMD (mm/mprotect.c:381-385, closed
//!   at :425);
//! * 6.12: moved up to `change_pud_range`, once per P4D-sized range that has a populated PUD (mm/mprotect.c:454-458).
//!
//! The region lies inside one PMD (so inside one PUD and one P4D range) and its pages are present, so both
//! generations open exactly one bracket per call; the protection really changes every time (`newflags ==
//! oldflags` would return early without a bracket: 6.1 :560, 6.12 :617). The whole VMA changes, so it is never
//! split or merged (an unaligned split would add a `__split_huge_pmd` CLEAR bracket, see `region.rs`; mprotect of
//! one interior page costs 3 brackets per round on 6.18 for that reason).
//!
//! Double notifications (pre-6.6 only; KVM x86 implements `->invalidate_range`, virt/kvm/kvm_main.c:918): every
//! mprotect is one `end_then_gather` of 2 MiB — the bracket's plain `_end` (6.1 mm/mprotect.c:426) calls
//! `->invalidate_range [A, A+2M)` (mm/mmu_notifier.c:575), then `do_mprotect_pkey`'s `tlb_finish_mmu` flushes the
//! range again: every one of the 512 present PTEs was gathered (`tlb_flush_pte_range`, :201-202), because x86
//! `pte_needs_flush` is true whenever `_PAGE_RW` changes, in either direction (`flush_on_change`,
//! arch/x86/include/asm/tlbflush.h:278). On 6.6+: none. Before 6.0 (5.10): none either, mprotect has no gather
//! (`change_protection_range` ends with `flush_tlb_range`, which calls no notifier; the gather came with commit
//! 4a18419f71cd "mm/mprotect: use mmu_gather"), told from BTF by `change_protection`'s first parameter.
//!
//! Secondary-TLB invalidations per mprotect (`do_mprotect_pkey` wraps `mprotect_fixup` in `tlb_gather_mmu` …
//! `tlb_finish_mmu`: 6.1 mm/mprotect.c:742/810, 6.12 :779/846):
//! * 5.10: the bracket's plain `_end` repeat over the 2 MiB (bracket context) only;
//! * 6.1: the bracket's plain `_end` repeat over the 2 MiB (bracket context), then `tlb_flush_mmu_tlbonly` over the
//!   gathered 2 MiB (gather context), both ranges;
//! * 6.6+: nothing in the bracket; `tlb_finish_mmu → tlb_flush → flush_tlb_mm_range(mm, A, A+2M, PAGE_SHIFT)`,
//!   one call in the gather context. Its scope is not the same on every 6.6+ kernel and BTF cannot tell them
//!   apart, so the truth keys it by kernel series (`kernel_api::flush_scope_above_ceiling`; open on another series):
//!   on 6.12, 512 pages exceed `tlb_single_page_flush_ceiling` (33, arch/x86/mm/tlb.c:998), so `start`/`end`
//!   themselves become `(0, TLB_FLUSH_ALL)` (:1054-1058) and `mmu_notifier_arch_invalidate_secondary_tlbs(mm, 0, ~0)`
//!   (:1083) is a whole-mm (`full_mm`) call; on 7.2 the same cut-off only rewrites the `flush_tlb_info`
//!   (`get_flush_tlb_info`, tlb.c:1402-1405) and the notifier gets the original 2 MiB (:1462), a range call.
//!
//! The write after the read-write mprotect adds nothing on either generation: mprotect already makes the dirty,
//! exclusive anonymous PTEs writable again (`MM_CP_TRY_CHANGE_WRITABLE` → `can_change_pte_writable`, 6.1 :197,
//! 6.12 :192), and if it did not, `do_wp_page` reuses a `PageAnonExclusive` page in place (6.1 mm/memory.c:3461,
//! 6.12 :3725 → `wp_page_reuse`), which opens no bracket — only `wp_page_copy` does.

use anyhow::{Context, Result};
use mmuscope_tests::truth::Cause;
use mmuscope_tests::truth::{
    BracketSource, DoubleKind, DoubleNotificationTruth, DoubleSource, GroundTruth, InvalidationTruth,
    KvmMprotectParams, NotifyEvent, ScenarioParams, SecondaryTlbApi, SecondaryTlbSource, SecondaryTlbTruth, TlbContext,
    TlbScope,
};

use crate::cgroups;
use crate::cli::KvmMprotectArgs;
use crate::kernel_api;
use crate::region::{AnonRegion, Thp};
use crate::subscriber::{self, Subscribed};
use crate::thp::PMD_BYTES;

pub const NAME: &str = "kvm-mprotect";

pub fn run(args: &KvmMprotectArgs) -> Result<GroundTruth> {
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let kernel_api = kernel_api::detect();
    let gathers = kernel_api::mprotect_gathers().context("does mprotect flush through an mmu_gather?")?;
    let memory = AnonRegion::map_isolated(PMD_BYTES, PMD_BYTES, Thp::Never).context("mapping guest memory")?;
    memory.touch_all();
    let (region_bytes, page_bytes) = (memory.len() as u64, memory.page_size() as u64);
    let guest = Subscribed::over(&args.subscriber, memory)?;
    let vms = guest.vms();
    // --- notifier registered: no allocation, free, print or mapping change until teardown ---
    let exercised = exercise(guest.memory(), args.iterations);
    let teardown = guest.teardown();
    // --- notifier gone ---
    exercised.context("mprotect")?;
    let received = teardown?;
    eprintln!("mmuscope-workload: {NAME}: {} read-only/read-write rounds done, subscriber gone", args.iterations);

    let invalidations =
        InvalidationTruth::from_sources(vec![BracketSource::new(
        NotifyEvent::ProtectionVma,
        2 * args.iterations,
        vms,
        "mprotect of a whole present 2 MiB VMA, alternately PROT_READ and PROT_READ|PROT_WRITE",
        "mprotect_fixup → change_protection → 6.1: change_pmd_range, lazily once per PUD range with a populated \
         PMD (mm/mprotect.c:381-385); 6.12: change_pud_range, once per P4D range with a populated PUD \
         (mm/mprotect.c:454-458); the write after PROT_WRITE reuses the exclusive page (no wp_page_copy)",
    )
        .with_causes(Cause::Mprotect, None)]);
    let params = KvmMprotectParams { iterations: args.iterations, region_bytes, page_bytes };
    let mut truth = GroundTruth::new(ScenarioParams::KvmMprotect(params), cgroups, vms, invalidations);
    truth.kernel_api = kernel_api;
    truth.double_notifications = Some(doubles(2 * args.iterations, region_bytes, gathers));
    subscriber::finish(&mut truth, secondary_tlb(2 * args.iterations, region_bytes, gathers), received)?;
    Ok(truth)
}

/// `calls` mprotects of the whole `bytes`-byte region; `gathers`: mprotect flushes through an `mmu_gather`
/// ([`kernel_api::mprotect_gathers`]).
fn secondary_tlb(calls: u64, bytes: u64, gathers: bool) -> SecondaryTlbTruth {
    let flush_scope = kernel_api::flush_scope_above_ceiling();
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    let src = |api, context, scope, count: u64, cause: &str, kernel_path: &str| {
        SecondaryTlbSource::exact(api, context, Some(scope), count, count * bytes, cause, kernel_path)
    };
    SecondaryTlbTruth {
        sources: vec![
            src(
                Old,
                TlbContext::Bracket,
                TlbScope::Range,
                calls,
                "the PROTECTION_VMA bracket's plain _end repeat over the 2 MiB",
                "6.1 mm/mprotect.c:426 → mm/mmu_notifier.c:575",
            ),
            src(
                Old,
                TlbContext::Gather,
                TlbScope::Range,
                if gathers { calls } else { 0 },
                "tlb_finish_mmu flushes the 512 changed PTEs (none before 6.0: no gather in mprotect)",
                "6.1 mm/mprotect.c:810 → include/asm-generic/tlb.h:447; 5.10 change_protection_range ends with \
                 flush_tlb_range, which calls no notifier",
            ),
            src(New, TlbContext::Bracket, TlbScope::Range, 0, "change_pte_range only gathers", "6.12 mm/mprotect.c"),
            SecondaryTlbSource {
                scope: flush_scope,
                bytes: (flush_scope == Some(TlbScope::Range)).then_some(calls * bytes),
                ..src(
                    New,
                    TlbContext::Gather,
                    TlbScope::FullMm,
                    calls,
                    "tlb_finish_mmu → flush_tlb_mm_range over the 512 changed PTEs: (0, ~0) on 6.12, the range on 7.2 \
                     (keyed by series: kernel_api::flush_scope_above_ceiling; no scope on another series)",
                    "6.12 mm/mprotect.c:846 → arch/x86/mm/tlb.c:998, :1054-1058, :1083; 7.2 tlb.c:1402-1405, :1462",
                )
            },
        ],
    }
}

fn doubles(calls: u64, bytes: u64, gathers: bool) -> DoubleNotificationTruth {
    // Before 6.0 mprotect has no gather flush to repeat the bracket's `_end` (see `secondary_tlb`).
    let doubled = if gathers { calls } else { 0 };
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    let src = DoubleSource::new;
    DoubleNotificationTruth {
        sources: vec![
            src(
                DoubleKind::EndThenGather,
                doubled,
                doubled * bytes,
                Some(Old),
                "PROTECTION_VMA bracket's _end invalidates the 2 MiB, then mprotect's gather flush does it again",
                "6.1 change_pmd_range plain _end (mm/mprotect.c:426, mm/mmu_notifier.c:575) then tlb_finish_mmu → \
                 tlb_flush_mmu_tlbonly (include/asm-generic/tlb.h:447) over all 512 changed PTEs",
            ),
            src(DoubleKind::EndAfterInLock, 0, 0, None, "no in-lock call", "change_pte_range defers to the gather"),
            src(DoubleKind::EndThenGather, 0, 0, Some(New), "no _end callback on 6.6+", "mn_hlist_invalidate_end"),
            src(
                DoubleKind::OverlappingSecondaryTlb,
                0,
                0,
                Some(New),
                "one secondary-TLB call per mprotect, from its gather flush, none in the bracket: nothing to overlap (and \
                 with KVM the call reaches no implementer)",
                "the gather flush (see the secondary-TLB sources); KVM's mmu_notifier_ops 6.12 virt/kvm/kvm_main.c:917",
            ),
            src(DoubleKind::OverlappingBrackets, 0, 0, None, "one bracket per mprotect", "change_protection"),
        ],
    }
}

/// N × (read-only, read-write, write page i): two brackets per round, round-robin over the pages.
fn exercise(memory: &AnonRegion, iterations: u64) -> std::io::Result<()> {
    let pages = memory.pages() as u64;
    for i in 0..iterations {
        memory.protect(libc::PROT_READ)?;
        memory.protect(libc::PROT_READ | libc::PROT_WRITE)?;
        memory.touch((i % pages) as usize);
    }
    Ok(())
}
