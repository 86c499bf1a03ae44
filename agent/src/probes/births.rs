//! Attaches the cgroup-birth program (`cgroup_mkdir_tp_btf`); its ring buffer is read by `crate::births`.

use aya::{Btf, Ebpf, programs::BtfTracePoint};

use super::attach::error_chain;
use crate::kernel::KernelInfo;

pub const PROGRAM: &str = "cgroup_mkdir_tp_btf";
const TRACEPOINT: &str = "cgroup_mkdir";
const RUNNING_KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Loads and attaches the program (`tp_btf`, no tracefs and no perf event needed; called while the agent is still
/// privileged, with the kernel's BTF). `Err` says why not.
pub fn attach(ebpf: &mut Ebpf, btf: &Btf, kernel: &KernelInfo) -> Result<(), String> {
    if kernel.deny.tracepoint("cgroup", TRACEPOINT) {
        return Err(format!("{TRACEPOINT} denied by --probes.deny"));
    }
    // tp_btf programs are attached by a BTF type id of the running kernel; ids from another BTF (`--btf`) could
    // name another tracepoint.
    if kernel.btf.path() != std::path::Path::new(RUNNING_KERNEL_BTF) {
        return Err(format!("--btf {} is not the running kernel's {RUNNING_KERNEL_BTF}", kernel.btf.path().display()));
    }
    let prog = ebpf.program_mut(PROGRAM).ok_or(format!("program {PROGRAM} missing"))?;
    let p: &mut BtfTracePoint = prog.try_into().map_err(|e: aya::programs::ProgramError| e.to_string())?;
    p.load(TRACEPOINT, btf).map_err(|e| error_chain(&e))?;
    p.attach().map_err(|e| error_chain(&e))?;
    Ok(())
}
