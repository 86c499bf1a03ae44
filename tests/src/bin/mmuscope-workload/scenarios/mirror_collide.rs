//! `mirror-collide`: an interval notifier (the project's HMM mirror test module, `tests/kmod/mmuscope_mirror/`) on a
//! 2 MiB region of this process, and every collision of the documented collision-retry loop an exact number of
//! times. No KVM VM: the interval notifier is the mm's only subscriber.
//!
//! Set-up, before the notifier exists: the module is loaded, the mirrored region `R` and a second region `M` of the
//! same mm are mapped in 2 MiB holes (`MADV_NOHUGEPAGE`, no VMA merges) and every page of both is written (present,
//! writable: neither a fault nor `hmm_range_fault` opens a bracket later). Then, with the notifier registered:
//! * `hits` × `madvise(MADV_DONTNEED)` of one page of `R`: one `MMU_NOTIFY_CLEAR` bracket each (6.1
//!   `madvise_dontneed_single_vma → zap_page_range`, 6.12 `→ zap_page_range_single`, both open the bracket whether or
//!   not the page is present), which `mn_itree_invalidate` delivers to the module's `ops->invalidate`;
//! * `misses` × `madvise(MADV_DONTNEED)` of one page of `M`: a CLEAR bracket on the same mm that hits no interval
//!   (`mn_itree_inv_start_range` finds no node): it reaches no subscriber;
//! * `rounds` × a **committed fault, invalidated**: the main thread faults `R` twice (its loop commits at once), then
//!   DONTNEEDs a page of it and faults again: the last fault's `mmu_interval_read_begin` is a read collision that is
//!   not a retry (one attempt); the first is one too from the second round on (the rounds' invalidations came after
//!   the main thread's previous fault); the second, a thread's later `read_begin` with no invalidation since its
//!   previous one, is none;
//! * `rounds` × three collisions, each with one more hit of `R`:
//!   - **wait**: the module holds the next invalidation inside `ops->invalidate` (after `mmu_interval_set_seq`);
//!     thread A's DONTNEED of `R` enters it; while it is held the main thread DONTNEEDs a page of `M` (a miss while
//!     `invalidate_seq` is odd); thread B's fault ioctl calls `mmu_interval_read_begin`, which sleeps until the
//!     invalidation ends; the release waits until B sleeps (`TASK_UNINTERRUPTIBLE`) and the module counts that wait;
//!   - **retry**: B's fault pauses between `hmm_range_fault` and the lock; the main thread's DONTNEED of `R`
//!     invalidates; on resume `mmu_interval_read_retry` says retry, the second attempt succeeds;
//!   - **busy**: B's fault pauses between `mmu_interval_read_begin` and `hmm_range_fault`; the DONTNEED of `R`
//!     invalidates; on resume `hmm_range_fault`'s first `mmu_interval_check_retry` returns -EBUSY (6.1/6.12
//!     mm/hmm.c `hmm_range_fault`), the second attempt succeeds.
//!
//! Read collisions (the module marks each reading task in `ops->invalidate` and takes the mark after each
//! `read_begin`): every retry and -EBUSY is one (a reader thread's second attempt), the waiting reader's only
//! `read_begin` is its thread's first (none), and the committed faults above add `2 × rounds - 1`.
//!
//! The truth is what the module counted (`MIRROR_STATUS`), checked against what the workload did and against each
//! fault call's own report. Threads have started before any invalidation is held: a thread's start-up maps its
//! stacks under the mmap write lock, which a held invalidation's madvise (read lock) would block, and a queued
//! writer blocks every later reader of the mm. The notifier is removed before
//! anything is unmapped; later brackets (thread stacks, exit) reach no subscriber. The faults only read (no
//! `HMM_PFN_REQ_WRITE`), so a zapped page comes back as the zero page without a bracket, and nothing writes `R` again.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use mmuscope_tests::truth::Cause;
use mmuscope_tests::truth::{
    BracketSource, GroundTruth, IntervalRange, IntervalTruth, InvalidationTruth, MirrorCollideParams, NotifyEvent,
    ScenarioParams,
};

use crate::cgroups;
use crate::cli::MirrorCollideArgs;
use crate::mirror::{self, Mirror, PAUSE_BEFORE_FAULT, PAUSE_BEFORE_RETRY};
use crate::region::{AnonRegion, Thp};

pub const NAME: &str = "mirror-collide";
const REGION_BYTES: usize = 2 << 20;
/// Pages the fault ioctl maps (from the start of `R`; the DONTNEEDs cycle over them).
const FAULT_PAGES: usize = 16;

pub fn run(args: &MirrorCollideArgs) -> Result<GroundTruth> {
    mirror::load(&args.module)?;
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let r = AnonRegion::map_isolated(REGION_BYTES, REGION_BYTES, Thp::Never).context("mapping the mirrored region")?;
    let m = AnonRegion::map_isolated(REGION_BYTES, REGION_BYTES, Thp::Never).context("mapping the other region")?;
    r.touch_all();
    m.touch_all();
    let dev = Mirror::open()?;
    dev.register(r.addr(), r.len() as u64).context("MIRROR_REGISTER")?;
    crate::agent::await_subscription_hooks()?;
    if let Some(url) = &args.agent.agent_url {
        crate::agent::await_interval_callback_timed(url, std::process::id())?;
    }
    // --- interval notifier registered: nothing but the counted madvise calls may invalidate R ---
    let done = exercise(&dev, &r, &m, args);
    let status = dev.status().context("MIRROR_STATUS");
    dev.unregister().context("MIRROR_UNREGISTER")?;
    // --- notifier gone ---
    let did = done?;
    let status = status?;
    eprintln!("mmuscope-workload: {NAME}: did {did:?}; the module counted {status:?}");
    ensure!(
        status.invalidations == did.hits,
        "the module saw {} invalidations, the workload made {}",
        status.invalidations,
        did.hits
    );
    ensure!(
        status.confirmed_waits == did.waits,
        "the module confirmed {} waits of {}",
        status.confirmed_waits,
        did.waits
    );
    ensure!(
        status.retries == did.retries && status.busy == did.busy && status.collisions == did.collisions,
        "module {status:?} against the faults' {did:?}"
    );
    ensure!(
        status.retries + status.busy <= status.collisions && did.collisions == did.retries + did.busy + did.committed,
        "every retry and -EBUSY is a read collision, and so is each committed fault after an invalidation: {did:?}"
    );

    let invalidations = InvalidationTruth::from_sources(vec![
        BracketSource::new(
            NotifyEvent::Clear,
            status.invalidations,
            0,
            "madvise(MADV_DONTNEED) of one page of the mirrored interval",
            "madvise_dontneed_single_vma → zap_page_range(_single) → __mmu_notifier_invalidate_range_start → \
             mn_itree_invalidate → ops->invalidate (the mirror module)",
        )
        .with_causes(Cause::Madvise, None),
    ]);
    let params = MirrorCollideParams {
        rounds: args.rounds,
        hits: args.hits,
        misses: args.misses,
        interval_bytes: r.len() as u64,
    };
    let mut truth = GroundTruth::new(ScenarioParams::MirrorCollide(params), cgroups, 0, invalidations);
    truth.interval = Some(IntervalTruth {
        invalidations: status.invalidations,
        misses: did.misses,
        concurrent_misses: did.concurrent_misses,
        read_waits: status.confirmed_waits,
        read_retries: status.retries,
        hmm_busy: status.busy,
        collisions_timed: false,
        read_collisions: Some(status.collisions),
        kernel_path: "mmu_interval_read_begin (waits; read collisions: its returned sequence per thread), \
                      hmm_range_fault (-EBUSY), mmu_interval_read_retry (inline; counted by the module)"
            .to_owned(),
        notifiers: vec![IntervalRange::of(r.addr(), r.len() as u64)],
    });
    Ok(truth)
}

/// What the workload did (and each fault call reported).
#[derive(Debug, Default)]
struct Did {
    hits: u64,
    misses: u64,
    concurrent_misses: u64,
    waits: u64,
    retries: u64,
    busy: u64,
    /// Read collisions the faults reported.
    collisions: u64,
    /// Of them, of faults that did not retry (a fault after an invalidation of a committed range).
    committed: u64,
}

fn exercise(dev: &Mirror, r: &AnonRegion, m: &AnonRegion, args: &MirrorCollideArgs) -> Result<Did> {
    let mut did = Did::default();
    let mut page = 0usize;
    let mut next_r = || {
        page = (page + 1) % FAULT_PAGES;
        page
    };
    for _ in 0..args.hits {
        r.dontneed(next_r())?;
        did.hits += 1;
    }
    for i in 0..args.misses {
        m.dontneed(i as usize % m.pages())?;
        did.misses += 1;
    }
    for round in 0..args.rounds {
        committed_round(dev, r, next_r(), round == 0, &mut did)?;
        wait_round(dev, r, m, next_r(), &mut did)?;
        for flags in [PAUSE_BEFORE_RETRY, PAUSE_BEFORE_FAULT] {
            paused_round(dev, r, next_r(), flags, &mut did)?;
        }
    }
    Ok(did)
}

/// The main thread faults `R` twice, invalidates a page of it and faults again: a read collision without a retry (the
/// first fault is one too unless it is the main thread's first `mmu_interval_read_begin` on the mirror; the second,
/// with nothing invalidated since the first, is none).
fn committed_round(dev: &Mirror, r: &AnonRegion, page: usize, first: bool, did: &mut Did) -> Result<()> {
    let before = dev.fault(r.addr(), FAULT_PAGES as u64, 0)?;
    let again = dev.fault(r.addr(), FAULT_PAGES as u64, 0)?;
    r.dontneed(page)?;
    did.hits += 1;
    let after = dev.fault(r.addr(), FAULT_PAGES as u64, 0)?;
    for (fault, want) in [(&before, u64::from(!first)), (&again, 0), (&after, 1)] {
        if fault.attempts != 1 || fault.retries != 0 || fault.busy != 0 || fault.collisions != want {
            bail!("a fault of a committed range saw {fault:?}, not 1 attempt with {want} read collision");
        }
        did.collisions += fault.collisions;
        did.committed += fault.collisions;
    }
    Ok(())
}

/// A held invalidation of `R`, a miss of `M` while it is held, and a reader that waits for it.
fn wait_round(dev: &Mirror, r: &AnonRegion, m: &AnonRegion, page: usize, did: &mut Did) -> Result<()> {
    let (go_a, go_b) = (AtomicBool::new(false), AtomicBool::new(false));
    let (ready_a, ready_b) = (AtomicBool::new(false), AtomicBool::new(false));
    let (addr, page_bytes) = (r.addr(), r.page_size());
    thread::scope(|s| -> Result<()> {
        let reader = s.spawn(|| {
            ready_b.store(true, Ordering::Release);
            spin_until(&go_b);
            dev.fault(addr, FAULT_PAGES as u64, 0)
        });
        let invalidator = s.spawn(|| {
            ready_a.store(true, Ordering::Release);
            spin_until(&go_a);
            dontneed_at(addr + (page * page_bytes) as u64, page_bytes)
        });
        // A thread's start-up maps its signal stack under the mmap write lock: it must be over before the held
        // madvise takes the read lock (a queued writer would block every later reader of the mm).
        spin_until(&ready_a);
        spin_until(&ready_b);
        dev.hold_next()?;
        go_a.store(true, Ordering::Release);
        dev.wait_for("a held invalidation", |st| st.holding == 1)?;
        m.dontneed(page % m.pages())?;
        go_b.store(true, Ordering::Release);
        let entered = dev.wait_for("a reader in mmu_interval_read_begin", |st| st.reader_entered == 1);
        let released = dev.release_after_reader_blocks();
        entered?;
        invalidator.join().expect("invalidator thread")?;
        let fault = reader.join().expect("reader thread")?;
        released.context("MIRROR_RELEASE (waiting for the reader to block)")?;
        // A new thread: its only mmu_interval_read_begin is its first on the mirror, no read collision.
        if fault.retries != 0 || fault.busy != 0 || fault.collisions != 0 {
            bail!("the waiting reader also collided: {fault:?}");
        }
        did.hits += 1;
        did.misses += 1;
        did.concurrent_misses += 1;
        did.waits += 1;
        Ok(())
    })
}

/// A fault paused at `flags` while `R` is invalidated once: one retry or one -EBUSY.
fn paused_round(dev: &Mirror, r: &AnonRegion, page: usize, flags: u64, did: &mut Did) -> Result<()> {
    let addr = r.addr();
    thread::scope(|s| -> Result<()> {
        let reader = s.spawn(|| dev.fault(addr, FAULT_PAGES as u64, flags));
        dev.wait_for("a paused fault", |st| st.paused == 1)?;
        r.dontneed(page)?;
        did.hits += 1;
        dev.resume()?;
        let fault = reader.join().expect("reader thread")?;
        let (retries, busy) = if flags == PAUSE_BEFORE_RETRY { (1, 0) } else { (0, 1) };
        if fault.retries != retries || fault.busy != busy || fault.attempts != 2 || fault.collisions != 1 {
            bail!(
                "a fault paused at {flags} saw {fault:?}, not {retries} retry and {busy} -EBUSY in 2 attempts, the \
                 second a read collision"
            );
        }
        did.retries += fault.retries;
        did.busy += fault.busy;
        did.collisions += fault.collisions;
        Ok(())
    })
}

fn spin_until(flag: &AtomicBool) {
    while !flag.load(Ordering::Acquire) {
        thread::sleep(Duration::from_micros(200));
    }
}

/// `madvise(MADV_DONTNEED)` of `len` bytes at `addr` (a page of a region the caller keeps mapped).
fn dontneed_at(addr: u64, len: usize) -> std::io::Result<()> {
    // SAFETY: the range is part of a live private anonymous mapping owned by this process; dropping its contents
    // is what the scenario wants.
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}
