//! One module per scenario. Each `run` enters a fresh cgroup first (see `crate::cgroups`), drives the kernel, tears
//! its VMs down deliberately and returns the ground truth; `main` prints it.
//!
//! Rule for exactness: between `KVM_CREATE_VM` and the VM's destruction a scenario allocates, frees, prints and
//! maps nothing beyond the invalidations it counts. Every allocation happens before, every print after. Regions are
//! laid out so that no VMA split or merge happens at an address that is not 2 MiB aligned (see `crate::region`).
//! The truth is what subscribers see: brackets after the last VM is destroyed reach nobody and are not counted
//! (see `crate::vm`). Nothing else may invalidate the mm meanwhile: regions that must stay small-paged are
//! `MADV_NOHUGEPAGE` (Debian's THP default is `always`, so khugepaged would otherwise collapse them), THP regions are
//! fully PMD-mapped before the VM exists, and the fork scenarios register no VM at all (`fork_common`).
//!
//! | scenario | truth |
//! |---|---|
//! | `kvm_madvise` | N CLEAR |
//! | `kvm_munmap` | N UNMAP |
//! | `kvm_mprotect` | 2N PROTECTION_VMA |
//! | `thp_partial_munmap` | N CLEAR (split) + N UNMAP, N overlapping-bracket doubles |
//! | `mremap_move` | 3N UNMAP (slot, move, old range), N `overlapping_brackets`; 6.6+: a range and a whole-mm call in the move's bracket, N `overlapping_secondary_tlb`; 6.1: 3N `_end` calls |
//! | `thp_split` | 2N CLEAR (`split_huge_page`: the frozen PMD split, then `try_to_migrate_one`; 5.10 splits every THP of the system), all `thp_split` |
//! | `thp_swap_out` | reclaim of N whole THPs: 6.1 N CLEAR split + N CLEAR unmap; 6.11+ N CLEAR unmap splitting in its walk (`thp_split`) |
//! | `fork_pinned`, `fork_pinned_thp`, `fork_unpinned` (`fork_common`) | pages copied at fork, THP splits |
//! | `fork_hugetlb` (`fork-pinned-hugetlb`, `fork-unpinned-hugetlb`) | hugetlb pages copied at fork, their bytes |
//! | `cross_cgroup` | N CLEAR on this mm (collapse; 5.10: 256 N page-outs), started from another cgroup |
//! | `multi_vm` | N CLEAR, K × N `kvm_unmap_hva_range` |
//! | `swap_out` | N CLEAR, per-generation in-lock secondary-TLB calls and doubles |
//! | `--subscriber sectlb` (kvm_madvise, kvm_munmap, kvm_mprotect, thp_partial_munmap) | the same, the test module's secondary-TLB subscriber instead of the VM (`crate::subscriber`): its own call count |
//! | `ksm_merge` | ksmd: N + (N-1) CLEAR (`write_protect_page`, `replace_page`, `ksm`), N CLEAR COW breaks (`ksm_cow` with `--probes.ksm-cow`, else `page_fault`); 3N-1 `change_pte` in brackets where the kernel has it |
//! | `mirror_collide` | hits of an interval notifier (CLEAR), misses, reader waits, read retries, -EBUSY (module-counted) |
//! | `rdma_odp` | an rxe ODP MR's interval notifier: N CLEAR + 2N PROTECTION_VMA + 1 UNMAP hits, misses on the same mm, no waits, no -EBUSY |

pub mod cross_cgroup;
mod fork_common;
pub mod fork_hugetlb;
pub mod fork_pinned;
pub mod fork_pinned_thp;
pub mod fork_unpinned;
pub mod ksm_merge;
pub mod kvm_madvise;
pub mod kvm_mprotect;
pub mod kvm_munmap;
pub mod mirror_collide;
pub mod mremap_move;
pub mod multi_vm;
pub mod rdma_odp;
pub mod swap_out;
pub mod thp_partial_munmap;
pub mod thp_split;
pub mod thp_swap_out;
