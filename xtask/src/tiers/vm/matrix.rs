//! The kernel matrix of the `vm` tier: which kernels it boots, in which modes, and which workload scenarios each
//! runs (command lines of `mmuscope-workload`). A scenario or a kernel is added here; `super` runs them.

/// The matrix: kernel request, whether it must be there (sid is best effort, except in CI where
/// every kernel listed must be), and its scenarios.
/// 6.1 and 6.12 are the two secondary-TLB generations the truths describe (source lines in each
/// scenario's module); 5.10 the oldest supported generation, sid the newest layout, each with the truths keyed by
/// what its BTF has.
/// The last field: the scenarios that need more than the workload, run there too. The test module's ([`MODULE`]:
/// [`MIRROR`] and [`SECTLB`]) need the module built against the kernel's headers with this host's gcc-12: Debian 12's
/// own 6.1, its build of 6.12 (the `linux-image-6.12-amd64` metapackage, gcc-12), which is the matrix's 6.12 so
/// that the module's scenarios run on a 6.6+ kernel too, and bullseye's 5.10 (its headers name gcc-10; the newer
/// gcc-12 stands in, `vm::kmod`). Trixie's build of the same 6.12 (the series `6.12`: gcc-14, kbuild tools that
/// need glibc 2.38) and sid's cannot build it. [`RDMA`] needs soft-RoCE with On-Demand Paging,
/// which rxe gained in 6.14 (commit d03fb5c6599e "RDMA/rxe: Allow registering MRs for On-Demand Paging", posted
/// 2024-12-20, and the patches after it: `drivers/infiniband/sw/rxe/rxe_odp.c`): of this matrix only sid (7.2) has
/// it; the rxe of 5.10, 6.1 and 6.12 has no ODP (in their guests the verbs helper reads ODP capabilities 0). A
/// listed scenario whose module or tools cannot be made is left out only outside CI; in CI it fails the tier.
/// 5.10 (Debian bullseye), the oldest generation tested, runs every scenario too: fork's pinned-page test reads
/// `mm->has_pinned` there (5.9–5.12) instead of `MMF_HAS_PINNED`. Two scenarios choose a trigger 5.10 has, by asking
/// the kernel: `thp-split` writes `1` to debugfs `split_huge_pages` (every THP of the system; the
/// `<pid>,<start>,<end>` form came in 5.13) and `cross-cgroup`'s other process pages the memory out (`process_madvise`
/// takes `MADV_COLLAPSE` only from 6.1). The hugetlb pair runs with its pre-5.13 truth (fork shares pinned huge
/// pages: 0 copies); in kprobe mode `kvm-madvise`'s invalidation stacks end at the bracket hook's own kretprobe
/// trampoline (the guest check's `stacks` models it); in fentry mode `change_pte` cannot attach (no struct
/// arguments in trampolines before 6.1), and `ksm-merge` expects it to count nothing.
pub(super) const KERNELS: &[(&str, bool, &[&str], &[&str])] = &[
    ("5.10", true, FULL, MODULE),
    ("6.1", true, FULL, MODULE),
    ("linux-image-6.12-amd64", true, FULL, MODULE),
    ("sid", false, FULL, RDMA),
];
pub(super) const MODES: &[&str] = &["fentry", "kprobe"];
/// Fork copies of pinned small pages, and the unpinned control.
const FORK: &[&str] = &["fork-pinned --pages 64", "fork-unpinned --pages 64"];
/// Fork copies of pinned hugetlb pages, and the unpinned control.
const HUGETLB: &[&str] = &["fork-pinned-hugetlb --huge-pages 4", "fork-unpinned-hugetlb --huge-pages 4"];
/// `split_huge_page` and reclaim's split of a PMD-mapped THP.
const THP_SPLITS: &[&str] = &["thp-split --iterations 4", "thp-swap-out --thps 2 --zram-mib 64"];
/// Every scenario with ground truth (`swap-out` swaps to a zram device the workload creates: the
/// kernel cache holds the zram modules, `vm::kernels::TOP_MODULES`).
/// Workload command lines; a scenario the workload binary does not offer is left out (and said so;
/// in CI that fails the tier).
/// Counts are modest: each figure is exact whatever N is, and TCG is slow.
pub(super) const FULL: &[&str] = &[
    "kvm-madvise --iterations 200",
    "kvm-munmap --iterations 200",
    "kvm-mprotect --iterations 100",
    "thp-partial-munmap --iterations 4",
    THP_SPLITS[0],
    THP_SPLITS[1],
    FORK[0],
    "fork-pinned-thp",
    FORK[1],
    HUGETLB[0],
    HUGETLB[1],
    // `--zram-mib` serves where the other process pages out (5.10): a collapse needs no swap.
    "cross-cgroup --regions 2 --zram-mib 64",
    "multi-vm --iterations 100 --vms 2",
    "swap-out --pages 256 --zram-mib 64",
    KSM,
];
/// KSM merges and their COW breaks (with `change_pte` where the kernel has it).
const KSM: &str = "ksm-merge --pages 32";
/// RDMA On-Demand Paging through soft-RoCE (rxe): an ODP memory region's interval notifier, faulted in by RDMA WRITE
/// and READ on a loopback RC QP pair, invalidated by madvise, mprotect and munmap (the verbs helper, `vm::rdma`).
pub(super) const RDMA: &[&str] = &["rdma-odp --rounds 8"];
/// The scenarios of the HMM mirror test module (see `vm::kmod`).
pub(super) const MIRROR: &[&str] = &["mirror-collide --rounds 2 --hits 10 --misses 10"];
/// Every scenario that needs the test module.
pub(super) const MODULE: &[&str] =
    &[MIRROR[0], SECTLB[0], SECTLB[1], SECTLB[2], SECTLB[3], SECTLB[4], SECTLB[5], SUBSCRIBER_SPLIT, INVENTORY_BOUND];
/// A KVM VM and the module's interval notifiers on one mm: 200 rounds over 512 pages, the first 100 under three
/// consecutive intervals, so 100 brackets reach KVM and one of them (`subscriber="kvm+mmuscope_mirror"`) and 100 KVM
/// alone (`"kvm"`); the held workload's inventory must list the three, each with its interval.
pub(super) const SUBSCRIBER_SPLIT: &str = "kvm-madvise --iterations 200 --interval-pages 100 --intervals 3";
/// More interval notifiers on one mm than the subscriber inventory lists (130 > `MAX_INTERVALS` = 128, two pages
/// each): the inventory lists the first 128 in address order, says `intervals_truncated`, and
/// `subscriber_inventory_truncated_mms{list="intervals"}` reads 1; 260 of the 300 rounds reach KVM and an interval.
pub(super) const INVENTORY_BOUND: &str = "kvm-madvise --iterations 300 --interval-pages 260 --intervals 130";
/// The same test module's secondary-TLB subscriber instead of KVM (a real implementer of the secondary-TLB op on
/// 6.6+, where KVM has none): the module's own call count is compared with the agent's.
pub(super) const SECTLB: &[&str] = &[
    "kvm-madvise --iterations 50 --subscriber sectlb",
    "kvm-munmap --iterations 50 --subscriber sectlb",
    "kvm-mprotect --iterations 25 --subscriber sectlb",
    "thp-partial-munmap --iterations 4 --subscriber sectlb",
    "swap-out --pages 256 --zram-mib 64 --subscriber sectlb",
    // A range and a whole-mm call in one bracket on 6.6+: `overlapping_secondary_tlb`.
    "mremap-move --iterations 4 --subscriber sectlb",
];
