//! Parameters of the scenarios added after `kvm-madvise` (one struct per scenario, or per family of scenarios).
//! Every size is in bytes and every count is what the scenario actually used, so a reader never recomputes them.

use serde::{Deserialize, Serialize};

/// `kvm-munmap`: N × (mmap a small anonymous mapping in a reserved hole, touch it, munmap it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmMunmapParams {
    pub iterations: u64,
    /// Size of each short-lived mapping.
    pub mapping_bytes: u64,
    pub page_bytes: u64,
    /// Whether the pages were written before the munmap (the bracket count does not depend on it).
    pub touched: bool,
}

/// `kvm-mprotect`: N × (mprotect the whole guest memory read-only, then read-write, then write one page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmMprotectParams {
    pub iterations: u64,
    pub region_bytes: u64,
    pub page_bytes: u64,
}

/// `thp-partial-munmap`: N PMD-mapped THPs; each loses its upper half to one munmap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThpPartialMunmapParams {
    pub iterations: u64,
    pub thp_bytes: u64,
    /// Bytes unmapped from each THP (its upper half).
    pub unmapped_bytes: u64,
}

/// `mremap-move`: N moves of a range of small pages across a PMD boundary (`MREMAP_FIXED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MremapMoveParams {
    pub iterations: u64,
    pub moved_bytes: u64,
    /// Bytes of each range below the PMD boundary (the first extent of the move).
    pub below_boundary_bytes: u64,
}

/// `thp-split`: N PMD-mapped THPs, each split whole by `split_huge_page` (debugfs `split_huge_pages`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThpSplitParams {
    pub iterations: u64,
    pub thp_bytes: u64,
}

/// `thp-swap-out`: N PMD-mapped THPs paged out whole by `MADV_PAGEOUT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThpSwapOutParams {
    pub thps: u64,
    pub thp_bytes: u64,
}

/// `fork-pinned`, `fork-pinned-thp`, `fork-unpinned`: one private anonymous region, optionally pinned with
/// `IORING_REGISTER_BUFFERS`, then one fork().
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkParams {
    /// Pages of the region (4 KiB each on x86-64).
    pub pages: u64,
    pub page_bytes: u64,
    /// The region was backed by one PMD-mapped THP before the fork.
    pub thp: bool,
    /// The region was registered as an io_uring fixed buffer (long-term FOLL_PIN) before the fork.
    pub pinned: bool,
}

/// `fork-pinned-hugetlb`, `fork-unpinned-hugetlb`: one private anonymous `MAP_HUGETLB` region, optionally pinned with
/// `IORING_REGISTER_BUFFERS`, then one fork().
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugetlbForkParams {
    pub huge_pages: u64,
    pub huge_page_bytes: u64,
    pub pinned: bool,
}

/// `cross-cgroup`: another process in another cgroup advises this process's memory with `process_madvise`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossCgroupParams {
    /// 2 MiB regions advised (one iovec each, one `process_madvise` call).
    pub regions: u64,
    pub region_bytes: u64,
    /// The advice, by its `MADV_*` name in lower case without the prefix (`collapse`).
    pub advice: String,
}

/// `multi-vm`: several VMs on one mm; N × (MADV_DONTNEED one page, touch it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiVmParams {
    pub iterations: u64,
    pub vms: u32,
    pub region_bytes: u64,
    pub page_bytes: u64,
}

/// `swap-out`: `MADV_PAGEOUT` of KVM-registered memory with swap available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapOutParams {
    pub pages: u64,
    pub page_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorCollideParams {
    /// Rounds of (held invalidation + waiting reader + concurrent miss, retry, -EBUSY).
    pub rounds: u64,
    /// Plain invalidations of the interval besides the rounds'.
    pub hits: u64,
    /// Plain brackets on the same mm missing the interval.
    pub misses: u64,
    /// Bytes of the mirrored interval.
    pub interval_bytes: u64,
}

/// `rdma-odp`: an rxe On-Demand Paging memory region (an interval notifier) and its invalidations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaOdpParams {
    pub rounds: u64,
    /// Bytes of the ODP region (the interval).
    pub region_bytes: u64,
    /// RDMA WRITE and READ operations (one packet each) that went through the ODP region.
    pub rdma_writes: u64,
    pub rdma_reads: u64,
    /// `--concurrent`: invalidations of R also while the operations run (the helper's second thread), and each
    /// WRITE's window page zapped before it. Their MADV_DONTNEED brackets: `concurrent_clear` and `window_clear`.
    #[serde(default)]
    pub concurrent: bool,
    #[serde(default)]
    pub concurrent_clear: u64,
    #[serde(default)]
    pub window_clear: u64,
}

/// `ksm-merge`: identical pages under a KVM notifier merged by ksmd into one KSM page, then each written once (its
/// sharing broken by a copy on write).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KsmMergeParams {
    pub pages: u64,
    pub page_bytes: u64,
}
