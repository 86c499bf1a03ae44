//! The floor: the agent's eBPF object with only its empty `floor_*` programs attached, on the hooks the agent uses in
//! tracepoint mode (the agent's `probes/table.rs`): `tp_btf/kvm_unmap_hva_range`, `tp_btf/mm_page_alloc` and the
//! eight clone-family syscall tracepoints of the fork window.

use std::path::Path;

use anyhow::{Context, Result};
use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, TracePoint},
};

const SYSCALLS: [&str; 4] = ["clone", "clone3", "fork", "vfork"];
const TP_BTF: [(&str, &str); 2] =
    [("floor_kvm_unmap_tp_btf", "kvm_unmap_hva_range"), ("floor_page_alloc_tp_btf", "mm_page_alloc")];

/// Loads the object and attaches the floor; the programs stay attached while the returned object lives.
pub fn attach(object: &Path) -> Result<Ebpf> {
    let bytes = std::fs::read(object).with_context(|| format!("reading {}", object.display()))?;
    let mut ebpf = Ebpf::load(&bytes).context("loading the eBPF object")?;
    let btf = Btf::from_sys_fs().context("kernel BTF")?;
    for (program, target) in TP_BTF {
        let p: &mut BtfTracePoint = ebpf.program_mut(program).context(program)?.try_into()?;
        p.load(target, &btf).with_context(|| format!("loading {program} for {target}"))?;
        p.attach().with_context(|| format!("attaching {program} to {target}"))?;
    }
    let p: &mut TracePoint = ebpf.program_mut("floor_tracepoint").context("floor_tracepoint")?.try_into()?;
    p.load().context("loading floor_tracepoint")?;
    for name in SYSCALLS.iter().flat_map(|s| [format!("sys_enter_{s}"), format!("sys_exit_{s}")]) {
        p.attach("syscalls", &name).with_context(|| format!("attaching floor_tracepoint to syscalls:{name}"))?;
    }
    Ok(ebpf)
}
