//! The fork scenarios' shared run: a private anonymous region (small pages or one PMD-mapped THP), all pages
//! written, optionally pinned through io_uring, then one fork(). The child reports its PFNs of the region
//! (`forkreport`), the parent compares them with its own: a page whose PFN differs was copied eagerly by fork.
//!
//! Kernel path of the copy (the pinned page stays with the parent, the child gets a copy):
//! * 6.1: `dup_mmap → copy_page_range → copy_pte_range → copy_present_pte`: `page_try_dup_anon_rmap` fails for a
//!   `PageAnonExclusive` page that `page_needs_cow_for_dma` (MMF_HAS_PINNED && `page_maybe_dma_pinned`) →
//!   `copy_present_page` copies it. A PMD-mapped THP first goes through `copy_huge_pmd`, which fails the same test,
//!   calls `__split_huge_pmd` on the parent and returns -EAGAIN, so the PTE path copies all 512 pages.
//! * 6.12: the same through `copy_present_ptes → folio_try_dup_anon_rmap_ptes` (-EBUSY for a maybe-pinned folio;
//!   then one page at a time) `→ copy_present_page`; THP: `copy_huge_pmd → __split_huge_pmd`, -EAGAIN.
//!
//! Unpinned pages are shared copy-on-write: same PFN in both.
//!
//! No VM is registered: fork's own brackets (one `PROTECTION_PAGE` per copied COW VMA that has an anon_vma, on the
//! parent's whole address space) depend on which of the Rust process's VMAs have an anon_vma, which user space
//! cannot observe exactly (an anon_vma outlives the pages that created it). Fork copies are counted by the agent
//! without any subscriber, so the truth here is the copies alone; `invalidations` is empty.

use anyhow::{Context, Result, bail};
use mmuscope_tests::cgroup::{self, CgroupPlacement, Hierarchies};
use mmuscope_tests::truth::{
    DoubleNotificationTruth, ForkParams, ForkTruth, GroundTruth, InvalidationTruth, ScenarioParams, SecondaryTlbTruth,
};

use crate::cgroups;
use crate::cli::{AgentArgs, CgroupArgs};
use crate::forkreport::{ChildReport, fork_and_report_pfns};
use crate::pagemap::Pagemap;
use crate::pin::IoUring;
use crate::region::{AnonRegion, Thp, page_size};
use crate::thp::{self, PMD_BYTES};

/// What a fork scenario sets up.
pub struct ForkSpec {
    pub name: &'static str,
    /// Small pages in the region (ignored with `thp`: one 2 MiB THP).
    pub pages: u64,
    pub thp: bool,
    pub pinned: bool,
    /// The scenario's `ScenarioParams` variant.
    pub params: fn(ForkParams) -> ScenarioParams,
}

/// With `from_sibling_memcg`, a second thread moves into the sibling memory cgroup `<leaf>-initiator` and forks
/// (see [`fork_from_sibling_memcg`]).
pub fn run(
    spec: &ForkSpec,
    cgroup: &CgroupArgs,
    agent: &AgentArgs,
    hold: bool,
    from_sibling_memcg: bool,
) -> Result<GroundTruth> {
    let cgroups = cgroups::enter_fresh(spec.name, cgroup)?;
    let page = page_size()?;
    let region = if spec.thp {
        thp::pmd_mapped_region()?
    } else {
        let bytes = usize::try_from(spec.pages).ok().and_then(|p| p.checked_mul(page)).context("--pages too large")?;
        AnonRegion::map_isolated(bytes, PMD_BYTES, Thp::Never).context("mapping the region")?
    };
    region.touch_all();
    let pages = region.pages();
    let ring = if spec.pinned {
        let ring = IoUring::setup()?;
        ring.register_region(&region)?;
        Some(ring)
    } else {
        None
    };
    let pinned_pages = if spec.pinned { pages as u64 } else { 0 };
    if spec.pinned
        && let Some(url) = &agent.agent_url
    {
        crate::agent::await_fork_copy_hook(url)?;
    }
    let pagemap = Pagemap::open_self(page)?;
    let parent_before = pagemap.pfns(region.addr(), pages).context("parent PFNs before fork")?;
    let thps_before = thp::pmd_mapped_kib(region.addr())? / (PMD_BYTES as u64 / 1024);

    let (child, forker_cgroup) = if from_sibling_memcg {
        let (child, forker) = fork_from_sibling_memcg(&cgroups, region.addr(), pages, page)?;
        (child, Some(forker))
    } else {
        (fork_and_report_pfns(region.addr(), pages, page, 1)?, None)
    };

    let parent_after = pagemap.pfns(region.addr(), pages).context("parent PFNs after fork")?;
    let thps_after = thp::pmd_mapped_kib(region.addr())? / (PMD_BYTES as u64 / 1024);
    crate::hold::until_stdin_closes(hold); // the pin (mm->pinned_vm) is still held here
    drop(ring); // unpins (asynchronously, when the ring is freed)
    if parent_after != parent_before {
        let moved = parent_before.iter().zip(&parent_after).filter(|(a, b)| a != b).count();
        bail!("{moved} of the parent's pages changed PFN across fork; the parent must keep its (pinned) pages");
    }
    let copied = child.pfns.iter().zip(&parent_after).filter(|(c, p)| c != p).count() as u64;
    let thp_splits = thps_before.saturating_sub(thps_after);
    eprintln!(
        "mmuscope-workload: {}: child {} has {copied} of {pages} pages at other PFNs; PMD-mapped THPs {thps_before} \
         → {thps_after}",
        spec.name, child.pid
    );
    check_premise(spec, pages as u64, copied, thp_splits)?;

    let fork = ForkTruth {
        forks: 1,
        child_pid: child.pid,
        pages: pages as u64,
        pinned_pages,
        copied_pages: copied,
        copied_bytes: copied * page as u64,
        forks_with_pinned_pages: u64::from(copied > 0),
        thp_splits,
        kernel_path: kernel_path(spec).to_owned(),
        forker_cgroup,
    };
    let params = ForkParams { pages: pages as u64, page_bytes: page as u64, thp: spec.thp, pinned: spec.pinned };
    let mut truth = GroundTruth::new((spec.params)(params), cgroups, 0, InvalidationTruth::from_sources(vec![]));
    truth.fork = Some(fork);
    // No VM, so no mmu_notifier subscriber: no secondary-TLB call and no double notification reaches anyone. Empty
    // parts, not absent ones: every context and kind must stay at zero.
    truth.secondary_tlb = Some(SecondaryTlbTruth { sources: Vec::new() });
    truth.double_notifications = Some(DoubleNotificationTruth { sources: Vec::new() });
    Ok(truth)
}

/// Forks from a second thread that first moves itself into `<leaf>-initiator` in the v1 memory hierarchy, while
/// the main thread (the mm's owner) stays in the scenario's cgroup and waits in `join`. Returns the child's report
/// and the forking thread's cgroup path.
fn fork_from_sibling_memcg(
    placement: &CgroupPlacement,
    addr: u64,
    pages: usize,
    page: usize,
) -> Result<(ChildReport, String)> {
    let owner = &placement.attributed().path;
    let sibling = owner.parent().and_then(|p| p.join(&cgroups::initiator_leaf(placement)).ok());
    let sibling = sibling.with_context(|| format!("no sibling cgroup name for {owner}"))?;
    let hierarchies = Hierarchies::discover()?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<(ChildReport, String)> {
            let forker = cgroup::create_and_enter_thread(&hierarchies, &sibling)
                .with_context(|| format!("moving the forking thread into {sibling}"))?;
            eprintln!("mmuscope-workload: forking thread entered memory cgroup {} (id {})", forker.path, forker.id);
            let child = fork_and_report_pfns(addr, pages, page, 2)?;
            Ok((child, forker.path.to_string()))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the forking thread panicked"))?
    })
}

/// The measured outcome must be what the kernel source says, or the scenario did not test what it claims.
fn check_premise(spec: &ForkSpec, pages: u64, copied: u64, splits: u64) -> Result<()> {
    let (want_copies, want_splits) = match (spec.pinned, spec.thp) {
        (true, true) => (pages, 1),
        (true, false) => (pages, 0),
        (false, _) => (0, 0),
    };
    if (copied, splits) != (want_copies, want_splits) {
        bail!(
            "{}: fork copied {copied} pages and split {splits} THPs; the kernel source says {want_copies} and \
             {want_splits} ({}); no truth printed",
            spec.name,
            kernel_path(spec)
        );
    }
    Ok(())
}

fn kernel_path(spec: &ForkSpec) -> &'static str {
    match (spec.pinned, spec.thp) {
        (true, false) => {
            "copy_page_range → copy_present_pte(s): page_try_dup_anon_rmap (6.1) / folio_try_dup_anon_rmap_ptes \
             (6.12) fails for a maybe-pinned exclusive page of an MMF_HAS_PINNED mm → copy_present_page"
        }
        (true, true) => {
            "copy_page_range → copy_huge_pmd: the maybe-pinned THP fails the dup → __split_huge_pmd on the parent, \
             -EAGAIN → copy_pte_range → copy_present_page for each of the 512 pages"
        }
        (false, _) => "copy_page_range → copy_present_pte(s): dup of the anon rmap succeeds; pages shared COW",
    }
}
