//! Probe families and their attachment: the declarative table ([`families`], written in the types of [`spec`]), the
//! per-kernel plan and what actually attached ([`report`]).
//!
//! [`Probes::load`] loads the embedded eBPF object with the BTF-derived layout, probes for
//! trampoline support, attaches the best alternative of each family and keeps everything
//! alive until dropped (dropping detaches and unloads).

mod arming;
mod attach;
mod births;
pub mod families;
pub mod needs;
pub mod perf_kprobe;
mod pinning;
pub mod report;
pub mod spec;
mod syscalls;

use anyhow::Context;
use aya::{Ebpf, EbpfLoader, maps::Map};
use mmuscope_abi::names;

#[cfg(test)]
mod object_tests;

pub use arming::{Arming, ArmingView, Armings, KEEP_ATTACHED, Recheck};
pub use pinning::PinError;
pub use report::{PlanReport, Status};
pub use spec::{FamilyId, Mode};

use crate::{cgroup_maps, kernel::KernelInfo};

/// `--probes.strict`: required families that attached nothing, each with why.
#[derive(Debug, thiserror::Error)]
#[error("--probes.strict: required probe families not attached: {0}")]
pub struct MissingRequired(pub String);

/// The eBPF object built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mmuscope.bpf.o"));

/// How to plan the attachment.
#[derive(Clone, Debug)]
pub struct Options {
    /// Only consider alternatives of this mode (testing, or working around a kernel bug).
    pub mode: Option<Mode>,
    /// `max_entries` of the aggregation maps (keys = cgroup × event × flags).
    pub stats_map_entries: u32,
    /// Brackets at least this long are sent to user space one by one (`None`: none are).
    pub slow_min_duration: Option<std::time::Duration>,
    /// Pin the counter maps here (bpffs) and reuse them across restarts.
    pub pin: Option<std::path::PathBuf>,
    /// Whether the programs keep the on-demand stack capture (`--stacks.disable` turns it off: the verifier then
    /// drops it from every program).
    pub stacks: bool,
    /// Keep the hot-path hooks that are otherwise attached on demand attached all the time (`probes::arming`); where
    /// they cannot be attached on demand (kprobe mode, fentry on 5.10), their families attach only with it.
    pub keep_attached: bool,
    /// The flags given that switch on families off by default (`spec::Need::OptIn`), e.g. `--probes.ksm-cow`.
    pub opt_in: Vec<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: None,
            stats_map_entries: 4096,
            slow_min_duration: None,
            pin: None,
            stacks: true,
            keep_attached: false,
            opt_in: Vec::new(),
        }
    }
}

/// Loaded programs, their links and the plan report.
pub struct Probes {
    ebpf: Ebpf,
    pub report: PlanReport,
    /// Whether cgroups are learned at creation (`crate::births`), or why not.
    pub births: Result<(), String>,
    /// The hot-path hooks attached only while some mm has pinned pages or subscriptions, by group.
    pub arming: Armings,
}

impl Probes {
    pub fn load(kernel: &KernelInfo, options: &Options) -> anyhow::Result<Self> {
        // `EbpfLoader::new` parses /sys/kernel/btf/vmlinux itself (aya offers no constructor without it), and aya's
        // parse of a kernel's BTF is ~15 MiB. So the loader comes first and its parse is dropped before ours is
        // made (ours may be `--btf PATH`, and `attach` needs one to hand to every program): the two are never
        // alive together, which is what made the start-up peak (BENCHMARKS.md).
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        let btf = aya::Btf::parse_file(kernel.btf.path(), aya::Endianness::default())
            .with_context(|| format!("aya cannot parse BTF at {}", kernel.btf.path().display()))?;
        let layout = kernel.layout.layout;
        let slow_min_ns =
            options.slow_min_duration.map_or(u64::MAX, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let stacks_enabled = u8::from(options.stacks);
        let pins = match &options.pin {
            Some(dir) => pinning::plan(dir, options.stats_map_entries)?,
            None => Vec::new(),
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        for map in cgroup_maps::MAPS {
            loader.map_max_entries(map.name, options.stats_map_entries);
        }
        let mut ebpf = loader
            .btf(Some(&btf))
            .override_global(names::LAYOUT, &layout, true)
            .override_global(names::SLOW_MIN_NS, &slow_min_ns, true)
            .override_global(names::STACKS_ENABLED, &stacks_enabled, true)
            .override_global(names::SUBSCRIBER_LAYOUT, &kernel.layout.subscribers, true)
            .load(OBJECT)
            .context("loading the eBPF object (maps) failed; are you root or do you have CAP_BPF + CAP_PERFMON?")?;
        syscalls::fill(&mut ebpf).context("filling the system-call cause table")?;
        let wants_trampolines = options.mode.is_none_or(|m| m == Mode::Fentry);
        let trampolines = if wants_trampolines {
            attach::probe_trampolines(&mut ebpf, &btf, kernel)
        } else {
            Err("not probed (--mode excludes fentry)".to_string())
        };
        let wide_trampolines = match &trampolines {
            Ok(()) => attach::probe_wide_trampolines(&mut ebpf, &btf, kernel),
            Err(_) => Err("no trampolines".to_string()),
        };
        let reattach = match &trampolines {
            Ok(()) => attach::probe_reattach(&mut ebpf, &btf, kernel),
            Err(why) => Err(format!("no fentry: {why}")),
        };
        let mut probed = needs::Probed {
            trampolines: trampolines.clone(),
            wide_trampolines,
            reattach: reattach.clone(),
            keep_attached: options.keep_attached,
            attached: Vec::new(),
            opted_in: options.opt_in.clone(),
        };
        let mut on_demand = arming::Collected::default();
        let families = attach::attach_families(&mut ebpf, &btf, kernel, &mut probed, options.mode, &mut on_demand);
        let mut flag = |name: &str| -> anyhow::Result<aya::maps::Array<_, u32>> {
            Ok(ebpf.take_map(name).with_context(|| format!("map {name} is missing"))?.try_into()?)
        };
        let (fork_flag, subscriptions_flag) = (flag(names::FORK_COPIES_ARMED)?, flag(names::SUBSCRIPTIONS_ARMED)?);
        let arming = arming::Armings::new(on_demand, Some(fork_flag), Some(subscriptions_flag));
        // Without the flag, an alternative whose on-demand hooks could not be attached again (kprobe mode; fentry
        // where a detached program does not attach again, `reattach`) was planned off (`attach::not_on_demand`):
        // what the groups hold here switches.
        if options.keep_attached {
            let why = match &reattach {
                Ok(()) => KEEP_ATTACHED.to_string(),
                Err(e) => format!("{KEEP_ATTACHED} (and fentry programs do not attach again on this kernel: {e})"),
            };
            arming.keep_attached(&why);
        }
        if kernel.layout.subscribers.has_pinned_bit == mmuscope_abi::HAS_PINNED_UNKNOWN {
            arming
                .fork_copy
                .keep_attached("this kernel's has-pinned flag is unknown, so the agent cannot tell when it is needed");
        }
        let attached = |family: FamilyId| probed.attached.iter().any(|(f, _)| *f == family);
        // Switches read by the bracket programs, set once the hooks they depend on run: per-operation records
        // need the operation boundaries; the per-thread caller-window lookup is skipped until windows exist, and the
        // KSM-copy lookup until its family runs.
        for (family, switch) in [
            (families::overlapping_brackets::ID, names::OPERATIONS_ON),
            (families::causes::ID, names::CAUSES_ON),
            (families::ksm_cow::ID, names::KSM_COW_ON),
        ] {
            if attached(family) {
                let map = ebpf.map_mut(switch).with_context(|| format!("map {switch} is missing"))?;
                aya::maps::Array::<_, u32>::try_from(map)?.set(0, 1, 0)?;
            }
        }
        let births = births::attach(&mut ebpf, &btf, kernel);
        let report = PlanReport {
            kernel_release: kernel.release.clone(),
            btf_path: kernel.btf.path().display().to_string(),
            generation: kernel.generation,
            generation_description: kernel.generation.describe(),
            capabilities: report::Capabilities {
                trampolines,
                kprobes: kernel.kprobes.clone(),
                reattach,
                cause_context: kernel.layout.group(crate::kernel::FieldGroup::CauseContext),
                tracefs: kernel.tracefs.clone(),
            },
            families,
            on_demand: arming.all().map(|a| a.report()).into(),
        };
        Ok(Self { ebpf, report, births, arming })
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

    /// `Err` naming every required family that attached nothing, and why, for `--probes.strict`.
    pub fn require_all(&self) -> Result<(), MissingRequired> {
        let missing: Vec<String> = self
            .report
            .families
            .iter()
            .filter(|f| f.required && !f.switched_off())
            .filter_map(|f| f.why_not_attached().map(|why| format!("{} ({why})", f.name())))
            .collect();
        if missing.is_empty() { Ok(()) } else { Err(MissingRequired(missing.join("; "))) }
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}
