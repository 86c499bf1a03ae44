//! What the running kernel is and offers: BTF types, kallsyms, attach capabilities, the
//! mmu_notifier generation and the struct layout handed to the eBPF programs.
//!
//! Everything is derived from the kernel itself (BTF, /proc, sysfs), never from its version.

pub mod btf;
mod btf_source;
pub mod caps;
pub mod deny;
mod fields;
pub mod generation;
pub mod kallsyms;
pub mod layout;
mod layout_subscribers;
pub mod symbols;
pub mod tracefs;

use std::path::Path;

use anyhow::Context;

pub use btf::KernelBtf;
pub use deny::Deny;
pub use fields::FieldGroup;
pub use generation::Generation;
pub use kallsyms::Kallsyms;
pub use layout::ResolvedLayout;
pub use tracefs::Tracefs;

/// Everything the probe planner needs to know about the kernel.
pub struct KernelInfo {
    pub release: String,
    pub btf: KernelBtf,
    pub kallsyms: Kallsyms,
    pub layout: ResolvedLayout,
    pub generation: Generation,
    pub events: EventNames,
    pub kprobes: caps::Capability,
    /// Where tracepoints are attached from, or why nowhere.
    pub tracefs: Result<Tracefs, String>,
    /// `--probes.deny`: families switched off (functions and fields are hidden inside [`KernelBtf`]).
    pub deny: Deny,
}

impl KernelInfo {
    /// Reads what the kernel offers from `btf_path`, kallsyms, sysfs and tracefs, with the names in `deny` hidden from
    /// the planner; `functions` are those the planner will look up in kallsyms.
    pub fn probe_with(btf_path: &Path, deny: Deny, functions: &[&'static str]) -> anyhow::Result<Self> {
        if !deny.is_empty() {
            tracing::warn!(names = ?deny.names().collect::<Vec<_>>(), "--probes.deny hides these from the probe planner");
        }
        let btf = KernelBtf::open(btf_path)
            .with_context(|| {
                format!(
                    "kernel BTF is required (CONFIG_DEBUG_INFO_BTF); pass --btf PATH if it is not at {}",
                    KernelBtf::DEFAULT_PATH
                )
            })?
            .hiding(deny.clone());
        let kallsyms = Kallsyms::load(Path::new(Kallsyms::PATH), functions).unwrap_or_default();
        let layout = ResolvedLayout::resolve(&btf)?;
        let generation = Generation::detect(&btf)?;
        let events = EventNames::from_pairs(
            btf.enum_values("mmu_notifier_event")?
                .into_iter()
                .map(|(name, v)| (v, name.trim_start_matches("MMU_NOTIFY_").to_ascii_lowercase()))
                .collect(),
        );
        let tracefs = tracefs::locate();
        tracefs::log(&tracefs);
        Ok(Self {
            release: release(),
            btf,
            kallsyms,
            layout,
            generation,
            events,
            kprobes: caps::kprobes(),
            tracefs,
            deny,
        })
    }
}

/// `enum mmu_notifier_event` value → lower-case name without the `MMU_NOTIFY_` prefix, from BTF
/// (values and members differ between kernels, e.g. `EXCLUSIVE` appeared in 5.14).
#[derive(Clone, Debug, Default)]
pub struct EventNames(Vec<(u64, String)>);

impl EventNames {
    pub fn from_pairs(pairs: Vec<(u64, String)>) -> Self {
        Self(pairs)
    }

    /// Name of `value`, `"unknown"` if BTF does not list it.
    pub fn name(&self, value: u64) -> &str {
        self.0.iter().find(|(v, _)| *v == value).map_or("unknown", |(_, n)| n.as_str())
    }

    /// Every name BTF lists.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, n)| n.as_str())
    }
}

/// `uname -r`.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod deny_tests;
#[cfg(test)]
mod tests;
