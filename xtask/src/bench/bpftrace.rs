//! The bpftrace equivalent of the agent in tracepoint mode, for the per-invalidation comparison: what a kernel
//! engineer would type to get the same numbers (Debian bpftrace 0.17, classic tracepoints only on this host).
//!
//! * `kvm:kvm_unmap_hva_range` counted per memory cgroup, walked as the agent walks it
//!   (`curtask->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id`);
//! * the fork window on the eight clone-family syscall tracepoints, and `kmem:mm_page_alloc` filtered exactly as the
//!   agent's `fork_page_alloc` (order 0, all of `GFP_HIGHUSER_MOVABLE`, then a per-thread window lookup).
//!
//! The two numbers bpftrace cannot derive itself come from the kernel's BTF (`bpftool btf dump`), as the agent
//! derives them: the memory controller's subsystem id and the `___GFP_*_BIT` positions.

use std::process::Command;

/// The one-liner a kernel engineer types first (issue 21's yardstick for the observed loop), with the ready line the
/// bench waits for: per-cgroup counts of KVM invalidations, the default hierarchy's cgroup id, nothing else.
pub const ONE_LINER: &str =
    "BEGIN { printf(\"ready\\n\"); }\ntracepoint:kvm:kvm_unmap_hva_range { @[cgroup] = count(); }\n";

use anyhow::{Context, Result, bail};

/// `GFP_HIGHUSER_MOVABLE`'s bits, as in the agent's `kernel/layout.rs`.
const GFP_BITS: [&str; 7] = [
    "___GFP_DIRECT_RECLAIM_BIT",
    "___GFP_KSWAPD_RECLAIM_BIT",
    "___GFP_IO_BIT",
    "___GFP_FS_BIT",
    "___GFP_HARDWALL_BIT",
    "___GFP_HIGHMEM_BIT",
    "___GFP_MOVABLE_BIT",
];

pub fn script() -> Result<String> {
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"])
        .output()
        .context("running bpftool btf dump")?;
    if !out.status.success() {
        bail!("bpftool btf dump failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let raw = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| -> Result<u64> {
        let key = format!("'{name}' val=");
        raw.lines()
            .find_map(|l| l.trim().strip_prefix(&key).and_then(|v| v.parse().ok()))
            .with_context(|| format!("{name} not in the kernel's BTF"))
    };
    let memcg = value("memory_cgrp_id")?;
    let mut gfp = 0u64;
    for bit in GFP_BITS {
        gfp |= 1 << value(bit)?;
    }
    Ok(render(memcg, gfp))
}

fn render(memcg: u64, gfp: u64) -> String {
    let cg = format!("curtask->cgroups->subsys[{memcg}]->cgroup->kn->id");
    let calls = |dir: &str| {
        ["clone", "clone3", "fork", "vfork"].map(|s| format!("tracepoint:syscalls:sys_{dir}_{s}")).join(", ")
    };
    format!(
        "BEGIN {{ printf(\"ready\\n\"); }}\n\
         tracepoint:kvm:kvm_unmap_hva_range {{ @kvm[{cg}] = count(); }}\n\
         {enter} {{ @win[tid] = {cg}; @copies_now[tid] = 0; }}\n\
         tracepoint:kmem:mm_page_alloc /args->order == 0 && (args->gfp_flags & {gfp:#x}) == {gfp:#x} && @win[tid]/ \
         {{ @copies_now[tid] += 1; }}\n\
         {exit} /@win[tid]/ {{ @forks[@win[tid]] = count(); @copies[@win[tid]] = sum(@copies_now[tid]); \
         delete(@win[tid]); delete(@copies_now[tid]); }}\n",
        enter = calls("enter"),
        exit = calls("exit"),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn script_uses_the_btf_values() {
        let s = super::render(4, 0x100cca);
        assert!(s.contains("subsys[4]"));
        assert!(s.contains("(args->gfp_flags & 0x100cca) == 0x100cca"));
        assert_eq!(s.matches("tracepoint:syscalls:sys_").count(), 8);
    }
}
