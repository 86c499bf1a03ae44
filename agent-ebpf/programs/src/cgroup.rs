//! Memory-cgroup attribution: task → css_set → memory css → cgroup → kernfs id.
//!
//! The memory controller's cgroup is the one the kernel charges; on hybrid v1/v2 hosts it
//! lives in the v1 memory hierarchy while `bpf_get_current_cgroup_id()` would return the
//! v2 root. Without a memory css the default hierarchy's cgroup is used and flagged.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use mmuscope_abi::{Counter, KernelLayout, key_flags};

use crate::{layout_field, maps::bump};

/// Reads a `T` at `base + off` from kernel memory.
#[inline(always)]
pub unsafe fn read<T>(base: u64, off: u32) -> Result<T, ()> {
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.map_err(|_| {
        bump(Counter::ReadFault);
    })
}

/// Loads a `T` at `base + off` with a plain load, for `base` a BTF-typed pointer (`bpf_get_current_task_btf()`,
/// `bpf_task_pt_regs()` and pointers loaded from them, in tracing programs). The verifier checks the access against
/// the kernel's BTF and makes it fault-safe (a fault reads 0), so it costs one instruction where
/// `bpf_probe_read_kernel` costs a helper call. `off` must be known to the verifier: a `LAYOUT` field (frozen
/// `.rodata`) or a sum of them; a program that breaks this fails to load and its family falls back to the next
/// alternative.
#[inline(always)]
pub unsafe fn load<T>(base: *const u8, off: u32) -> T {
    unsafe { core::ptr::read_volatile(base.add(off as usize).cast::<T>()) }
}

/// `current->mm` (0 for a kernel thread): one direct BTF load where the kernel has `bpf_get_current_task_btf`
/// (5.11+), a probe read from `bpf_get_current_task` before. `task_btf` is a frozen constant, so the verifier
/// never sees the helper a kernel lacks.
#[inline(always)]
pub fn current_task_mm() -> u64 {
    let task_mm = layout_field!(task_mm);
    if layout_field!(task_btf) != 0 {
        let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task_btf() } as *const u8;
        unsafe { load(task, task_mm) }
    } else {
        unsafe { read::<u64>(bpf_get_current_task(), task_mm) }.unwrap_or(0)
    }
}

/// [`task_memcg`] of the current task, walked with [`load`]s from `bpf_get_current_task_btf()`. Each offset is read
/// from `LAYOUT` alone ([`layout_field!`]): this runs on the hot path of observed processes, where copying the
/// whole layout would cost more than the walk.
#[inline(always)]
pub fn current_memcg_btf(task: *const u8) -> (u64, u32) {
    let none = (0, key_flags::NO_OWNER);
    let (task_cgroups, memory_cgrp_id) = (layout_field!(task_cgroups), layout_field!(memory_cgrp_id));
    let cset: *const u8 = unsafe { load(task, task_cgroups) };
    if cset.is_null() {
        return none;
    }
    let mut flags = 0;
    let mut cgrp: *const u8 = core::ptr::null();
    if memory_cgrp_id != u32::MAX {
        let (subsys, css_cgroup) = (layout_field!(css_set_subsys), layout_field!(css_cgroup));
        let css: *const u8 = unsafe { load(cset, subsys + memory_cgrp_id * 8) };
        if !css.is_null() {
            cgrp = unsafe { load(css, css_cgroup) };
        }
    }
    if cgrp.is_null() {
        flags |= key_flags::DEFAULT_HIERARCHY;
        let dfl = layout_field!(css_set_dfl_cgrp);
        cgrp = unsafe { load(cset, dfl) };
    }
    if cgrp.is_null() {
        return none;
    }
    let (cgroup_kn, kn_id) = (layout_field!(cgroup_kn), layout_field!(kn_id));
    let kn: *const u8 = unsafe { load(cgrp, cgroup_kn) };
    if kn.is_null() {
        return none;
    }
    (unsafe { load(kn, kn_id) }, flags)
}

/// Memory cgroup of the owner of the current task's mm (`task->mm->owner`), walked with [`load`]s like
/// [`current_memcg_btf`]. The owner is the task the memory is charged to; on cgroup v1 another thread of the same
/// process can sit in another memory cgroup. Falls back to `task` itself (flagged) when it has no mm or the mm
/// no owner, as [`mm_owner_memcg`] does.
#[inline(always)]
pub fn current_owner_memcg_btf(task: *const u8) -> (u64, u32) {
    let (task_mm, mm_owner) = (layout_field!(task_mm), layout_field!(mm_owner));
    let mm: *const u8 = unsafe { load(task, task_mm) };
    let owner: *const u8 = if mm.is_null() { core::ptr::null() } else { unsafe { load(mm, mm_owner) } };
    if owner.is_null() {
        let (id, flags) = current_memcg_btf(task);
        return (id, flags | key_flags::OWNER_FROM_CURRENT);
    }
    current_memcg_btf(owner)
}

/// Cgroup id and [`key_flags`] of `task`'s memory cgroup.
#[inline(always)]
pub fn task_memcg(layout: &KernelLayout, task: u64) -> (u64, u32) {
    match unsafe { task_memcg_inner(layout, task) } {
        Ok(v) => v,
        Err(()) => (0, key_flags::NO_OWNER),
    }
}

#[inline(always)]
unsafe fn task_memcg_inner(layout: &KernelLayout, task: u64) -> Result<(u64, u32), ()> {
    if task == 0 {
        return Err(());
    }
    let cset: u64 = unsafe { read(task, layout.task_cgroups)? };
    if cset == 0 {
        return Err(());
    }
    let mut flags = 0;
    let mut cgrp = 0u64;
    if layout.memory_cgrp_id != u32::MAX {
        let css: u64 = unsafe { read(cset, layout.css_set_subsys + layout.memory_cgrp_id * 8)? };
        if css != 0 {
            cgrp = unsafe { read(css, layout.css_cgroup)? };
        }
    }
    if cgrp == 0 {
        flags |= key_flags::DEFAULT_HIERARCHY;
        cgrp = unsafe { read(cset, layout.css_set_dfl_cgrp)? };
    }
    if cgrp == 0 {
        return Err(());
    }
    let kn: u64 = unsafe { read(cgrp, layout.cgroup_kn)? };
    if kn == 0 {
        return Err(());
    }
    let id: u64 = unsafe { read(kn, layout.kn_id)? };
    Ok((id, flags))
}

/// Memory cgroup of the owner of `mm` (`mm->owner`), the task the memory is charged to.
///
/// The owner is cleared while the last user exits (`mm_update_next_owner`); the teardown
/// (`exit_mmap`) then runs in that exiting task, so the current task stands in for it.
#[inline(always)]
pub fn mm_owner_memcg(layout: &KernelLayout, mm: u64) -> (u64, u32) {
    if mm == 0 {
        return (0, key_flags::NO_OWNER);
    }
    match unsafe { read::<u64>(mm, layout.mm_owner) } {
        Ok(owner) if owner != 0 => task_memcg(layout, owner),
        Ok(_) => {
            let (id, flags) = task_memcg(layout, unsafe { bpf_get_current_task() });
            (id, flags | key_flags::OWNER_FROM_CURRENT)
        }
        Err(()) => (0, key_flags::NO_OWNER),
    }
}

/// Whether the current task is a kernel thread, for work on `mm`. An exiting user task has no
/// `mm` any more while it tears its own one down (`exit_mm` clears it before `mmput`), but its
/// `active_mm` is still that mm; a kernel thread could borrow the same `active_mm` lazily, so the
/// memory cgroup must match the owner's too (`owner_cgroup`; 0 to skip that test).
#[inline(always)]
pub fn is_kthread(layout: &KernelLayout, task: u64, mm: u64, owner_cgroup: u64) -> bool {
    if unsafe { read::<u64>(task, layout.task_mm) }.is_ok_and(|m| m != 0) {
        return false;
    }
    let exiting_owner = mm != 0
        && unsafe { read::<u64>(task, layout.task_active_mm) }.is_ok_and(|a| a == mm)
        && (owner_cgroup == 0 || task_memcg(layout, task).0 == owner_cgroup);
    !exiting_owner
}
