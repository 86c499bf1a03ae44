//! The floor: the agent's eBPF object with only its empty programs attached, on the hooks the caller names (the
//! bench takes them from the agent's own plan, `mmuscope check --mode tracepoint --json`, so the floor follows the
//! probe table). Optionally one `tp_btf` hook gets the minimal per-cgroup count instead of the empty program.

use std::path::Path;

use anyhow::{Context, Result, bail};
use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, TracePoint},
};

const EMPTY_TP_BTF: &str = "floor_tp_btf";
const EMPTY_TRACEPOINT: &str = "floor_tracepoint";
const COUNT_TP_BTF: &str = "floor_count_tp_btf";

/// Where the programs go.
pub struct Hooks {
    /// `tp_btf` tracepoint names.
    pub tp_btf: Vec<String>,
    /// Classic tracepoints, `group:name`.
    pub tracepoints: Vec<String>,
    /// The `tp_btf` hook (one of `tp_btf`) that gets the count program.
    pub count_on: Option<String>,
}

/// Loads and attaches the programs; they stay attached while the returned objects live. A `tp_btf` program is
/// bound to its tracepoint at load time, so the object is loaded once per `tp_btf` hook (and once more for the
/// classic tracepoints, which one program serves together).
pub fn attach(object: &Path, hooks: &Hooks) -> Result<Vec<Ebpf>> {
    if let Some(c) = &hooks.count_on
        && !hooks.tp_btf.contains(c)
    {
        bail!("--count-on {c} is not one of the --tp-btf hooks");
    }
    let bytes = std::fs::read(object).with_context(|| format!("reading {}", object.display()))?;
    let btf = Btf::from_sys_fs().context("kernel BTF")?;
    let mut held = Vec::new();
    for target in &hooks.tp_btf {
        let program = if hooks.count_on.as_ref() == Some(target) { COUNT_TP_BTF } else { EMPTY_TP_BTF };
        let mut ebpf = Ebpf::load(&bytes).context("loading the eBPF object")?;
        let p: &mut BtfTracePoint = ebpf.program_mut(program).context(program)?.try_into()?;
        p.load(target, &btf).with_context(|| format!("loading {program} for {target}"))?;
        p.attach().with_context(|| format!("attaching {program} to {target}"))?;
        held.push(ebpf);
    }
    if !hooks.tracepoints.is_empty() {
        let mut ebpf = Ebpf::load(&bytes).context("loading the eBPF object")?;
        let p: &mut TracePoint = ebpf.program_mut(EMPTY_TRACEPOINT).context(EMPTY_TRACEPOINT)?.try_into()?;
        p.load().with_context(|| format!("loading {EMPTY_TRACEPOINT}"))?;
        for target in &hooks.tracepoints {
            let (group, name) = target.split_once(':').with_context(|| format!("{target}: not group:name"))?;
            p.attach(group, name).with_context(|| format!("attaching {EMPTY_TRACEPOINT} to {target}"))?;
        }
        held.push(ebpf);
    }
    Ok(held)
}
