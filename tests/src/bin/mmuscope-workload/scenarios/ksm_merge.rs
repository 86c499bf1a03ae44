//! `ksm-merge`: N identical pages (each written once: byte 0 = 1, the rest 0) under one KVM VM, `MADV_MERGEABLE`;
//! ksmd, run fast, merges them into one KSM page; then every page is written once, which breaks its sharing.
//!
//! What ksmd does, per the kernel source (5.10, 6.1 and 6.12 mm/ksm.c; the same steps in all three): its first pass
//! over the region only records each page's checksum (`cmp_and_merge_page` inserts a page into the unstable tree only
//! once its checksum is unchanged since the last pass). On the second pass the first page goes into the unstable tree;
//! the second finds it there: `try_to_merge_two_pages` write-protects the second page, which becomes the KSM page
//! (`try_to_merge_one_page(…, kpage = NULL)` → `write_protect_page`), then write-protects the first and maps the
//! KSM page in its place (`write_protect_page` + `replace_page`). Every later page finds the KSM page in the stable
//! tree: `try_to_merge_with_ksm_page` → `write_protect_page` + `replace_page`. `write_protect_page` and
//! `replace_page` each open one `MMU_NOTIFY_CLEAR` bracket over the page: N + (N − 1) brackets, all started by ksmd
//! (`cause="ksm"`, a kernel thread initiating on this mm: `cross_cgroup_invalidations_total{initiator="kthread"}`).
//! A merge that fails (a page reference it cannot account for) would add brackets; the premise below catches one
//! that did not succeed in the end, and the exact comparison any other.
//!
//! Each write after the merge faults on a write-protected KSM page, which is never reused: `do_wp_page` →
//! `wp_page_copy` opens one `MMU_NOTIFY_CLEAR` bracket and maps a private copy: N brackets (5.10 mm/memory.c
//! `do_wp_page`: `PageKsm(page)` → `goto copy`; 6.12 `folio_test_ksm` → `wp_page_copy`, inlined there). Their cause
//! is the hook's `ksm_cow` where the agent runs the `ksm_cow` family (`--probes.ksm-cow`, fentry and kprobe modes:
//! `vmf->page` is the KSM page), else the fault's context, `page_fault`.
//!
//! `change_pte`, where the kernel has it (5.10, 6.1; removed in 6.10): `set_pte_at_notify` in `write_protect_page`
//! (the PTE was writable and dirty), in `replace_page` and in `wp_page_copy`, each inside its bracket: 3N − 1, all in
//! the `bracket` context (5.10 and 6.1 alike).
//!
//! Truth from the process's own view: before the merge every page has its own PFN (`/proc/self/pagemap`); the merge
//! is complete when all N map one PFN; `/sys/kernel/mm/ksm/pages_shared` and `pages_sharing` grew by 1 and N − 1
//! (the premise); after the writes all N PFNs differ again and none is the KSM page's. ksmd is stopped (`run=0`,
//! which waits for its batch in progress) as soon as the merge shows, so it never runs again while the VM exists.
//! The KSM settings (`run`, `pages_to_scan`, `sleep_millisecs`) are restored afterwards, on every path.
//!
//! Secondary-TLB calls and doubles are not part of this truth (`None`: no statement).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mmuscope_tests::truth::{
    BracketSource, Cause, ChangePteTruth, CrossCgroupTruth, GroundTruth, InvalidationTruth, KsmMergeParams,
    NotifyEvent, ScenarioParams,
};

use crate::cgroups;
use crate::cli::KsmMergeArgs;
use crate::kernel_api;
use crate::pagemap::{PageEntry, Pagemap};
use crate::region::{AnonRegion, Thp, page_size};
use crate::thp::PMD_BYTES;
use crate::vm::{GuestVm, Kvm};

pub const NAME: &str = "ksm-merge";
const KSM: &str = "/sys/kernel/mm/ksm";
/// How long ksmd may take to merge the pages (two full passes over every mergeable page in the guest).
const MERGE_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(10);
/// ksmd's batch per wake-up: the whole region several times over, so that two passes take a few wake-ups.
const PAGES_TO_SCAN: &str = "4096";

pub fn run(args: &KsmMergeArgs) -> Result<GroundTruth> {
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let kernel_api = kernel_api::detect();
    let change_pte = kernel_api::has_change_pte().context("looking for __mmu_notifier_change_pte in BTF")?;
    let n = args.pages as usize;
    let page = page_size()?;
    let ksmd = ksmd_pid()?;
    let mut ksm = Ksm::open()?;
    ksm.set("run", "0")?;
    let memory = AnonRegion::map_isolated(n * page, PMD_BYTES, Thp::Never).context("mapping the pages")?;
    memory.touch_all();
    memory.advise(libc::MADV_MERGEABLE).context("madvise(MADV_MERGEABLE) (CONFIG_KSM?)")?;
    let pagemap = Pagemap::open_self(page)?;
    let original = pagemap.pfns(memory.addr(), n)?;
    if distinct(&original) != n {
        bail!("the {n} fresh pages do not have {n} distinct PFNs: {original:?}");
    }
    let mut buf = vec![0u8; n * 8];
    let before = ksm.sharing()?;
    let kvm = Kvm::open()?;
    let guest = GuestVm::over(&kvm, memory, 1)?;
    // --- KVM notifier registered: no allocation, free, print or mapping change until teardown ---
    let outcome = exercise(&mut ksm, &pagemap, &guest.memory, &mut buf);
    let teardown = guest.teardown();
    // --- notifier gone ---
    let restored = ksm.restore();
    let Outcome { ksm_pfn, sharing, waited } = outcome?;
    teardown?;
    restored?;
    let grew = (sharing.0 - before.0, sharing.1 - before.1);
    if grew != (1, n as u64 - 1) {
        bail!(
            "{KSM}: pages_shared +{}, pages_sharing +{} while {n} pages merged into one (another process merging?)",
            grew.0,
            grew.1
        );
    }
    let n = n as u64;
    eprintln!(
        "mmuscope-workload: {NAME}: {n} pages merged into one KSM page (pfn {ksm_pfn:#x}) in {} ms, each then \
         copied on write, VM destroyed",
        waited.as_millis()
    );

    let merge_path = "ksm_do_scan → cmp_and_merge_page → try_to_merge_two_pages / try_to_merge_with_ksm_page → \
                      try_to_merge_one_page";
    let sources = vec![
        BracketSource::new(
            NotifyEvent::Clear,
            n,
            1,
            "ksmd write-protects each page it merges",
            &format!("{merge_path} → write_protect_page: mmu_notifier_range_init(MMU_NOTIFY_CLEAR) over the page"),
        )
        .with_causes(Cause::Ksm, None)
        .initiated_by(ksmd),
        BracketSource::new(
            NotifyEvent::Clear,
            n - 1,
            1,
            "ksmd maps the KSM page in place of each other page",
            &format!("{merge_path} → replace_page: mmu_notifier_range_init(MMU_NOTIFY_CLEAR) over the page"),
        )
        .with_causes(Cause::Ksm, None)
        .initiated_by(ksmd),
        BracketSource::new(
            NotifyEvent::Clear,
            n,
            1,
            "a write to a merged page breaks its sharing (copy on write)",
            "do_wp_page (a KSM page is never reused) → wp_page_copy: mmu_notifier_range_init(MMU_NOTIFY_CLEAR)",
        )
        .with_causes(Cause::PageFault, Some(Cause::KsmCow)),
    ];
    let params = KsmMergeParams { pages: n, page_bytes: page as u64 };
    let mut truth =
        GroundTruth::new(ScenarioParams::KsmMerge(params), cgroups, 1, InvalidationTruth::from_sources(sources));
    truth.kernel_api = kernel_api;
    truth.cross_cgroup = Some(CrossCgroupTruth {
        initiator_pid: ksmd,
        initiator_cgroups: None,
        invalidations: 2 * n - 1,
        initiator_kind: "kthread".to_owned(),
    });
    truth.change_pte = change_pte.then(|| ChangePteTruth {
        bracket: 3 * n - 1,
        outside: 0,
        sources: "set_pte_at_notify in write_protect_page (N), replace_page (N-1) and wp_page_copy (N), each inside \
                  its own bracket"
            .to_owned(),
    });
    Ok(truth)
}

struct Outcome {
    ksm_pfn: u64,
    /// `pages_shared`, `pages_sharing` once merged (ksmd stopped).
    sharing: (u64, u64),
    waited: Duration,
}

/// Runs ksmd until every page maps one PFN, stops it, then writes every page once and checks each got its own
/// copy. Allocates nothing on the way that succeeds (pre-opened files, `buf` for the pagemap entries).
fn exercise(ksm: &mut Ksm, pagemap: &Pagemap, memory: &AnonRegion, buf: &mut [u8]) -> Result<Outcome> {
    let n = memory.pages();
    ksm.set("pages_to_scan", PAGES_TO_SCAN)?;
    ksm.set("sleep_millisecs", "0")?;
    ksm.set("run", "1")?;
    let started = Instant::now();
    let merged = loop {
        pagemap.read_into(memory.addr(), buf).context("reading pagemap")?;
        if let Some(pfn) = shared_pfn(buf) {
            break Some(pfn);
        }
        if started.elapsed() > MERGE_TIMEOUT {
            break None;
        }
        std::thread::sleep(POLL);
    };
    let waited = started.elapsed();
    // Waits for ksmd's batch in progress (it holds ksm_thread_mutex while it scans): no merge bracket is open after.
    ksm.set("run", "0")?;
    let Some(ksm_pfn) = merged else {
        bail!(
            "ksmd did not merge the {n} pages into one within {MERGE_TIMEOUT:?} ({} distinct PFNs)",
            distinct_in(buf)
        );
    };
    let sharing = ksm.sharing()?;
    memory.touch_all();
    pagemap.read_into(memory.addr(), buf).context("reading pagemap")?;
    let copies = buf.chunks_exact(8).map(entry).filter(|e| e.pfn().is_some_and(|p| p != ksm_pfn && p != 0)).count();
    let unique = distinct_in(buf);
    if copies != n || unique != n {
        bail!("after writing every merged page, {copies} of {n} are private copies, {unique} PFNs distinct");
    }
    Ok(Outcome { ksm_pfn, sharing, waited })
}

fn entry(bytes: &[u8]) -> PageEntry {
    PageEntry(u64::from_le_bytes(bytes.try_into().expect("chunks_exact(8) yields 8 bytes")))
}

/// The one PFN every entry of `buf` maps, if all are present and map the same one.
fn shared_pfn(buf: &[u8]) -> Option<u64> {
    let mut entries = buf.chunks_exact(8).map(entry);
    let first = entries.next()?.pfn().filter(|p| *p != 0)?;
    entries.all(|e| e.pfn() == Some(first)).then_some(first)
}

/// Distinct PFNs among the present entries of `buf`, without allocating (N is small).
fn distinct_in(buf: &[u8]) -> usize {
    let pfns = || buf.chunks_exact(8).map(entry).filter_map(PageEntry::pfn);
    pfns().enumerate().filter(|(i, p)| !pfns().take(*i).any(|q| q == *p)).count()
}

fn distinct(pfns: &[u64]) -> usize {
    let mut v = pfns.to_vec();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// ksmd's pid (a kernel thread, so its brackets carry no process of the run).
fn ksmd_pid() -> Result<u32> {
    for e in std::fs::read_dir("/proc").context("listing /proc")? {
        let Ok(e) = e else { continue };
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == "ksmd") {
            return Ok(pid);
        }
    }
    bail!("no ksmd thread (CONFIG_KSM?)")
}

/// The KSM sysfs knobs this scenario changes, opened once (writes and reads then allocate nothing) and put back as
/// they were on [`Ksm::restore`] or drop.
struct Ksm {
    files: Vec<(&'static str, File, String)>,
    shared: File,
    sharing: File,
    restored: bool,
}

impl Ksm {
    const KNOBS: [&'static str; 3] = ["run", "pages_to_scan", "sleep_millisecs"];

    fn open() -> Result<Self> {
        let mut files = Vec::with_capacity(Self::KNOBS.len());
        for name in Self::KNOBS {
            let path = format!("{KSM}/{name}");
            let saved = std::fs::read_to_string(&path).with_context(|| format!("reading {path} (CONFIG_KSM?)"))?;
            let file = OpenOptions::new().write(true).open(&path).with_context(|| format!("opening {path}"))?;
            files.push((name, file, saved.trim().to_owned()));
        }
        let open = |name: &str| File::open(format!("{KSM}/{name}")).with_context(|| format!("opening {KSM}/{name}"));
        Ok(Self { files, shared: open("pages_shared")?, sharing: open("pages_sharing")?, restored: false })
    }

    fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let Some((_, file, _)) = self.files.iter().find(|(n, _, _)| *n == name) else {
            bail!("{name} is not a knob this scenario saved")
        };
        file.write_all_at(value.as_bytes(), 0).with_context(|| format!("writing {value} to {KSM}/{name}"))
    }

    /// `pages_shared`, `pages_sharing`.
    fn sharing(&self) -> Result<(u64, u64)> {
        Ok((read_number(&self.shared)?, read_number(&self.sharing)?))
    }

    /// Puts every knob back, `run` last (so ksmd resumes with its own settings, if it ran before).
    fn restore(&mut self) -> Result<()> {
        self.restored = true;
        let mut first = Ok(());
        for (name, file, saved) in self.files.iter().rev() {
            if let Err(e) = file.write_all_at(saved.as_bytes(), 0)
                && first.is_ok()
            {
                first = Err(e).with_context(|| format!("restoring {KSM}/{name} to {saved}"));
            }
        }
        first
    }
}

impl Drop for Ksm {
    fn drop(&mut self) {
        if !self.restored
            && let Err(e) = self.restore()
        {
            eprintln!("mmuscope-workload: warning: {e:#}");
        }
    }
}

/// A decimal number from a sysfs file, read into a stack buffer.
fn read_number(file: &File) -> Result<u64> {
    let mut buf = [0u8; 32];
    let len = file.read_at(&mut buf, 0).context("reading a KSM counter")?;
    let mut value = 0u64;
    for b in buf[..len].iter().take_while(|b| b.is_ascii_digit()) {
        value = value * 10 + u64::from(b - b'0');
    }
    Ok(value)
}
