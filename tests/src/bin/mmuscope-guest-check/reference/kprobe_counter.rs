//! [`KprobeCounter`]: hit counters on KVM's own callbacks (the module's first observer).

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use mmuscope_tests::truth::SecondaryTlbApi;

use super::{append, tracefs};

/// The kprobe event group of the probes this module adds.
const GROUP: &str = "mmuscope_ref";
/// KVM's bracket callback, in every generation.
pub const KVM_START: &str = "kvm_mmu_notifier_invalidate_range_start";
/// KVM's secondary-TLB callback before 6.6 (`->invalidate_range`).
pub const KVM_SECONDARY: &str = "kvm_mmu_notifier_invalidate_range";

/// The KVM callbacks to count on a kernel with `api`.
pub fn kvm_callbacks(api: SecondaryTlbApi) -> &'static [&'static str] {
    match api {
        SecondaryTlbApi::InvalidateRange => &[KVM_START, KVM_SECONDARY],
        SecondaryTlbApi::ArchInvalidateSecondaryTlbs => &[KVM_START],
    }
}

/// Kprobes on some kernel functions, removed again on drop.
pub struct KprobeCounter {
    tracefs: PathBuf,
    functions: Vec<&'static str>,
}

impl KprobeCounter {
    /// Adds and enables one kprobe per function. Fails, naming the function, where the kernel refuses one.
    pub fn arm(functions: &[&'static str]) -> Result<Self> {
        let mut me = Self { tracefs: tracefs()?, functions: Vec::new() };
        for f in functions {
            let line = format!("p:{GROUP}/{f} {f}\n");
            append(&me.tracefs.join("kprobe_events"), &line).with_context(|| format!("adding a kprobe on {f}"))?;
            me.functions.push(f);
            let enable = me.tracefs.join("events").join(GROUP).join(f).join("enable");
            fs::write(&enable, "1").with_context(|| format!("enabling the kprobe on {f} ({})", enable.display()))?;
        }
        Ok(me)
    }

    /// Hits per function since [`Self::arm`] (`kprobe_profile` lines: `[GROUP/]name hits misses`).
    pub fn hits(&self) -> Result<BTreeMap<&'static str, u64>> {
        let path = self.tracefs.join("kprobe_profile");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut out = BTreeMap::new();
        for f in &self.functions {
            let with_group = format!("{GROUP}/{f}");
            let hits = text
                .lines()
                .find_map(|l| {
                    let mut cols = l.split_whitespace();
                    let name = cols.next()?;
                    (name == *f || name == with_group).then(|| cols.next()?.parse::<u64>().ok())?
                })
                .with_context(|| format!("{} has no line for {f}:\n{text}", path.display()))?;
            out.insert(*f, hits);
        }
        Ok(out)
    }
}

impl Drop for KprobeCounter {
    fn drop(&mut self) {
        for f in &self.functions {
            let _ = fs::write(self.tracefs.join("events").join(GROUP).join(f).join("enable"), "0");
            let _ = append(&self.tracefs.join("kprobe_events"), &format!("-:{GROUP}/{f}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secondary_callback_only_before_6_6() {
        assert_eq!(kvm_callbacks(SecondaryTlbApi::InvalidateRange), &[KVM_START, KVM_SECONDARY]);
        assert_eq!(kvm_callbacks(SecondaryTlbApi::ArchInvalidateSecondaryTlbs), &[KVM_START]);
    }
}
