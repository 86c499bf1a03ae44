//! `fork-pinned-hugetlb --huge-pages N` and its control `fork-unpinned-hugetlb`: N private anonymous hugetlb pages
//! (`MAP_HUGETLB`, the default huge page size), all written, pinned long-term with `IORING_REGISTER_BUFFERS` (or
//! not), then one fork(). The child reports its PFNs of the region (`forkreport`); a huge page whose PFNs differ
//! from the parent's was copied eagerly. Truth: pinned, every huge page is copied (bytes: N × the huge page size);
//! unpinned, none is.
//!
//! Kernel path (6.1 mm/hugetlb.c `copy_hugetlb_page_range`; 6.12 and 7.2 the folio versions): for an anonymous
//! huge page, `page_try_dup_anon_rmap` (6.1) / `hugetlb_try_dup_anon_rmap` (6.12) fails when the page may be
//! DMA-pinned in an `MMF_HAS_PINNED` mm; fork then allocates a huge page from the pool (`alloc_huge_page` /
//! `alloc_hugetlb_folio`), copies it (`copy_user_huge_page` / `copy_user_large_folio`) and installs it in the child
//! (`hugetlb_install_page` → `hugepage_add_new_anon_rmap`, `hugetlb_install_folio` → `hugetlb_add_new_anon_rmap`).
//! So the pool needs N free huge pages beyond the parent's: the scenario raises `/proc/sys/vm/nr_hugepages` by 2N
//! and puts the old value back at the end. No VM is registered (see `fork_common`): the truth is the copies alone.
//!
//! Before 5.13 (5.10 mm/hugetlb.c `copy_hugetlb_page_range`) fork shares every anonymous huge page, pinned or not
//! (`get_page` + `page_dup_rmap`, COW later): the truth is then 0 copies for both scenarios, and the child's PFNs,
//! equal to the parent's, show the sharing. BTF cannot tell the two apart, the kernel series does
//! (`kernel_api::fork_copies_pinned_hugetlb`).

use std::fs;

use anyhow::{Context, Result, bail};
use mmuscope_tests::truth::{GroundTruth, HugetlbForkParams, HugetlbForkTruth, InvalidationTruth, ScenarioParams};

use crate::cgroups;
use crate::cli::ForkHugetlbArgs;
use crate::forkreport::fork_and_report_pfns;
use crate::kernel_api;
use crate::pagemap::Pagemap;
use crate::pin::IoUring;
use crate::region::{AnonRegion, page_size};

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

pub fn run(args: &ForkHugetlbArgs, pinned: bool) -> Result<GroundTruth> {
    let name = if pinned { "fork-pinned-hugetlb" } else { "fork-unpinned-hugetlb" };
    let cgroups = cgroups::enter_fresh(name, &args.cgroup)?;
    let eager = kernel_api::fork_copies_pinned_hugetlb().context("does fork copy pinned hugetlb pages (BTF)?")?;
    let huge = usize::try_from(meminfo("Hugepagesize")? * 1024)?;
    let reserve = Reserve::raise(args.huge_pages * 2)?;
    let n = usize::try_from(args.huge_pages)?;
    let region = AnonRegion::map_hugetlb(n * huge, huge).context("mapping the hugetlb region")?;
    region.touch_all();
    let ring = if pinned {
        let ring = IoUring::setup()?;
        ring.register_region(&region)?;
        Some(ring)
    } else {
        None
    };
    let page = page_size()?;
    let base_pages = region.len() / page;
    let pagemap = Pagemap::open_self(page)?;
    let parent_before = pagemap.pfns(region.addr(), base_pages).context("parent PFNs before fork")?;
    let child = fork_and_report_pfns(region.addr(), base_pages, page, 1)?;
    let parent_after = pagemap.pfns(region.addr(), base_pages).context("parent PFNs after fork")?;
    drop(ring);
    drop(region);
    drop(reserve);
    if parent_after != parent_before {
        bail!("the parent's hugetlb pages changed PFN across fork; the parent must keep its (pinned) pages");
    }
    let per_huge = huge / page;
    let mut copied = 0u64;
    for (i, (c, p)) in child.pfns.chunks(per_huge).zip(parent_after.chunks(per_huge)).enumerate() {
        let differing = c.iter().zip(p).filter(|(c, p)| c != p).count();
        match differing {
            0 => {}
            d if d == per_huge => copied += 1,
            d => bail!("huge page {i}: {d} of its {per_huge} base pages moved in the child; a copy moves all"),
        }
    }
    eprintln!("mmuscope-workload: {name}: child {} has {copied} of {n} huge pages at other PFNs", child.pid);
    let want = if pinned && eager { n as u64 } else { 0 };
    if copied != want {
        bail!("{name}: fork copied {copied} huge pages; the kernel source says {want}; no truth printed");
    }
    let params = HugetlbForkParams { huge_pages: n as u64, huge_page_bytes: huge as u64, pinned };
    let scenario =
        if pinned { ScenarioParams::ForkPinnedHugetlb(params) } else { ScenarioParams::ForkUnpinnedHugetlb(params) };
    let mut truth = GroundTruth::new(scenario, cgroups, 0, InvalidationTruth::from_sources(vec![]));
    truth.hugetlb_fork = Some(HugetlbForkTruth {
        child_pid: child.pid,
        huge_pages: n as u64,
        huge_page_bytes: huge as u64,
        pinned_huge_pages: if pinned { n as u64 } else { 0 },
        copied_huge_pages: copied,
        copied_bytes: copied * huge as u64,
        kernel_path: if pinned && eager {
            "copy_hugetlb_page_range: the dup of the maybe-pinned anon rmap fails → alloc_hugetlb_folio, \
             copy_user_large_folio, hugetlb_install_folio (6.1: alloc_huge_page, copy_user_huge_page, \
             hugetlb_install_page)"
        } else if pinned {
            "copy_hugetlb_page_range before 5.13: get_page + page_dup_rmap whether pinned or not; huge pages shared COW"
        } else {
            "copy_hugetlb_page_range: dup of the anon rmap succeeds; huge pages shared COW"
        }
        .to_owned(),
    });
    Ok(truth)
}

/// The number of `/proc/meminfo`'s `<key>:` line (KiB, or a count of huge pages).
fn meminfo(key: &str) -> Result<u64> {
    let text = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let line = text.lines().find(|l| l.split(':').next() == Some(key));
    let value = line.and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok());
    value.with_context(|| format!("/proc/meminfo has no {key}"))
}

/// Huge pages added to the pool for the run; the old pool size is written back on drop.
struct Reserve {
    old: u64,
}

impl Reserve {
    fn raise(more: u64) -> Result<Self> {
        let old: u64 = fs::read_to_string(NR_HUGEPAGES)?.trim().parse().context("parsing nr_hugepages")?;
        let free = meminfo("HugePages_Free")?;
        fs::write(NR_HUGEPAGES, (old + more).to_string()).with_context(|| format!("writing {NR_HUGEPAGES}"))?;
        let reserve = Self { old };
        let now = meminfo("HugePages_Free")?;
        if now < free + more {
            bail!("asked for {more} more huge pages, the pool has {now} free (was {free}): memory too fragmented?");
        }
        Ok(reserve)
    }
}

impl Drop for Reserve {
    fn drop(&mut self) {
        if let Err(e) = fs::write(NR_HUGEPAGES, self.old.to_string()) {
            eprintln!("mmuscope-workload: could not restore {NR_HUGEPAGES} to {}: {e}", self.old);
        }
    }
}
