//! The system-call half of cause tagging: which system calls map to which cause. The
//! numbers are the user-space ABI of the architecture the agent is built for (from `libc`),
//! written into the `SYSCALL_CAUSES` array before any program runs.

use aya::{Ebpf, maps::Array};
use mmuscope_abi::{Cause, names};

/// System calls that invalidate secondary MMUs for a known reason; every other system call is
/// `other_syscall`.
const TABLE: &[(libc::c_long, Cause)] = &[
    (libc::SYS_madvise, Cause::Madvise),
    (libc::SYS_process_madvise, Cause::Madvise),
    (libc::SYS_munmap, Cause::Munmap),
    (libc::SYS_brk, Cause::Munmap),
    (libc::SYS_mmap, Cause::Munmap),
    (libc::SYS_mremap, Cause::Mremap),
    (libc::SYS_mprotect, Cause::Mprotect),
    (libc::SYS_pkey_mprotect, Cause::Mprotect),
    (libc::SYS_clone, Cause::Fork),
    (libc::SYS_clone3, Cause::Fork),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_fork, Cause::Fork),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_vfork, Cause::Fork),
    (libc::SYS_exit, Cause::Exit),
    (libc::SYS_exit_group, Cause::Exit),
    (libc::SYS_migrate_pages, Cause::Migration),
    (libc::SYS_move_pages, Cause::Migration),
    (libc::SYS_mbind, Cause::Migration),
];

/// Fills the eBPF `SYSCALL_CAUSES` array (its length bounds the numbers it can hold).
pub fn fill(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let map = ebpf
        .map_mut(names::SYSCALL_CAUSES)
        .ok_or_else(|| anyhow::anyhow!("map {} is missing from the eBPF object", names::SYSCALL_CAUSES))?;
    let mut array: Array<_, u32> = Array::try_from(map)?;
    let slots = array.len();
    for &(nr, cause) in TABLE {
        let nr = u32::try_from(nr).ok().filter(|n| *n < slots);
        let nr = nr.ok_or_else(|| anyhow::anyhow!("system call number beyond the {slots} cause slots"))?;
        array.set(nr, cause as u32, 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_is_distinct_and_fits_the_array() {
        let mut seen = std::collections::HashSet::new();
        for (nr, _) in TABLE {
            assert!(*nr >= 0 && *nr < 512, "{nr}");
            assert!(seen.insert(*nr), "{nr} twice");
        }
    }
}
