//! Cgroup names at creation (`mmuscope_abi::CgroupBirth`): `tp_btf/cgroup_mkdir` runs with the new cgroup and its
//! path, already formatted by the kernel for the tracepoint; the path goes to user space, which looks the
//! directory up and remembers its id. Cgroup creation is rare, so this costs nothing measurable, and it needs no
//! struct offset.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::{btf_tracepoint, map},
    maps::RingBuf,
    programs::BtfTracePointContext,
};
use mmuscope_abi::CgroupBirth;

/// Paths of newly created cgroups (`births`); a full ring drops records (the agent then walks cgroupfs as before).
#[map]
static CGROUP_BIRTHS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// `cgroup_mkdir(struct cgroup *cgrp, const char *path)`.
#[btf_tracepoint]
pub fn cgroup_mkdir_tp_btf(ctx: BtfTracePointContext) -> i32 {
    let path: *const u8 = ctx.arg(1);
    let Some(mut entry) = CGROUP_BIRTHS.reserve::<CgroupBirth>(0) else { return 0 };
    let r = entry.as_mut_ptr();
    // SAFETY: `r` points to a reserved, exclusively owned record; `len` is written before submit.
    let len = unsafe { bpf_probe_read_kernel_str_bytes(path, &mut (*r).path).map(|s| s.len()) };
    match len {
        Ok(len) => {
            unsafe {
                (*r).len = len as u32;
                (*r)._pad = 0;
            }
            entry.submit(0);
        }
        Err(_) => entry.discard(0),
    }
    0
}
