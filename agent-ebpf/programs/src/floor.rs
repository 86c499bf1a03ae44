//! Empty programs for `cargo xtask bench`'s floor: the cost of merely having a program on the hooks the agent uses
//! in tracepoint mode (`tp_btf` `kvm_unmap_hva_range` and `mm_page_alloc`, the clone syscall tracepoints). The agent
//! never loads them; `mmuscope-bench-floor` (tests crate) does.

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};

#[btf_tracepoint]
pub fn floor_kvm_unmap_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint]
pub fn floor_page_alloc_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[tracepoint]
pub fn floor_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}
