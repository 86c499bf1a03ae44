//! Probe families and their attachment: the declarative [`table`], the per-kernel plan and
//! what actually attached ([`report`]).
//!
//! [`Probes::load`] loads the embedded eBPF object with the BTF-derived layout, probes for
//! trampoline support, attaches the best alternative of each family and keeps everything
//! alive until dropped (dropping detaches and unloads).

mod attach;
mod needs;
pub mod report;
pub mod table;
mod table_subscribers;

use anyhow::Context;
use aya::{Ebpf, EbpfLoader, maps::Map};
use mmuscope_abi::names;

pub use report::{PlanReport, Status};
pub use table::Mode;

use crate::kernel::KernelInfo;

/// The eBPF object built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mmuscope.bpf.o"));

/// How to plan the attachment.
#[derive(Clone, Debug)]
pub struct Options {
    /// Only consider alternatives of this mode (testing, or working around a kernel bug).
    pub mode: Option<Mode>,
    /// `max_entries` of the aggregation maps (keys = cgroup × event × flags).
    pub stats_map_entries: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self { mode: None, stats_map_entries: 4096 }
    }
}

/// Loaded programs, their links and the plan report.
pub struct Probes {
    ebpf: Ebpf,
    pub report: PlanReport,
}

impl Probes {
    pub fn load(kernel: &KernelInfo, options: &Options) -> anyhow::Result<Self> {
        let btf = aya::Btf::parse_file(kernel.btf.path(), aya::Endianness::default())
            .with_context(|| format!("aya cannot parse BTF at {}", kernel.btf.path().display()))?;
        let layout = kernel.layout.layout;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(names::LAYOUT, &layout, true)
            .override_global(names::SUBSCRIBER_LAYOUT, &kernel.layout.subscribers, true)
            .map_max_entries(names::BRACKET_STATS, options.stats_map_entries)
            .map_max_entries(names::KVM_UNMAP_COUNTS, options.stats_map_entries)
            .map_max_entries(names::FORK_STATS, options.stats_map_entries)
            .map_max_entries(names::SECONDARY_STATS, options.stats_map_entries)
            .map_max_entries(names::DOUBLE_STATS, options.stats_map_entries)
            .map_max_entries(names::CROSS_STATS, options.stats_map_entries)
            .load(OBJECT)
            .context("loading the eBPF object (maps) failed; are you root or do you have CAP_BPF + CAP_PERFMON?")?;
        let wants_trampolines = options.mode.is_none_or(|m| m == Mode::Fentry);
        let trampolines = if wants_trampolines {
            attach::probe_trampolines(&mut ebpf, &btf, kernel)
        } else {
            Err("not probed (--mode excludes fentry)".to_string())
        };
        let mut probed = needs::Probed { trampolines: trampolines.clone(), attached: Vec::new() };
        let families = attach::attach_families(&mut ebpf, &btf, kernel, &mut probed, options.mode);
        let report = PlanReport {
            kernel_release: kernel.release.clone(),
            btf_path: kernel.btf.path().display().to_string(),
            generation: kernel.generation,
            generation_description: kernel.generation.describe(),
            capabilities: report::Capabilities { trampolines, kprobes: kernel.kprobes.clone() },
            families,
        };
        Ok(Self { ebpf, report })
    }

    /// Takes a map out of the object for the collector (programs keep using it).
    pub fn take_map(&mut self, name: &str) -> anyhow::Result<Map> {
        self.ebpf.take_map(name).with_context(|| format!("map {name} is missing from the eBPF object"))
    }

    /// A duplicate of a loaded program's fd (the subscriber sweeper links its iterator itself).
    pub fn program_fd(&self, name: &str) -> anyhow::Result<aya::programs::ProgramFd> {
        let prog = self.ebpf.program(name).with_context(|| format!("program {name} is missing"))?;
        Ok(prog.fd()?.try_clone()?)
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}
