//! `--probes.deny`: names hidden from the probe planner, to see what the agent does on a kernel that lacks them
//! (a missing function, struct member, enumerator or tracepoint) or to switch a probe family off.
//!
//! A name is matched against what the planner asks BTF for: a function (`__mmu_notifier_invalidate_range_start`),
//! a struct member as `struct.member` (`mm_struct.owner`), an enumerator (`memory_cgrp_id`), a BTF type or a
//! tracepoint (`kvm_unmap_hva_range` hides `btf_trace_kvm_unmap_hva_range`), or a probe family name (`brackets`).
//! Hiding works on the planner's view only; nothing is written anywhere.

use std::collections::BTreeSet;

#[derive(Clone, Debug, Default)]
pub struct Deny {
    names: BTreeSet<String>,
}

impl Deny {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        Self { names: names.into_iter().map(Into::into).filter(|n: &String| !n.is_empty()).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    pub fn function(&self, name: &str) -> bool {
        self.has(name)
    }

    /// `member` may be dotted (`flags.__mm_flags`); its first component is what `struct.member` names.
    pub fn member(&self, strukt: &str, member: &str) -> bool {
        let first = member.split('.').next().unwrap_or(member);
        self.has(&format!("{strukt}.{member}")) || self.has(&format!("{strukt}.{first}"))
    }

    pub fn enumerator(&self, name: &str) -> bool {
        self.has(name)
    }

    pub fn type_name(&self, name: &str) -> bool {
        self.has(name) || name.strip_prefix("btf_trace_").is_some_and(|tp| self.has(tp))
    }

    /// A classic tracepoint `group:name`, denied as `group:name` or `name`.
    pub fn tracepoint(&self, group: &str, name: &str) -> bool {
        self.has(name) || self.has(&format!("{group}:{name}"))
    }

    /// The reason a family is switched off, if it is.
    pub fn family(&self, name: &str) -> Option<String> {
        self.has(name).then(|| format!("family {name} denied by --probes.deny"))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_each_kind_of_name() {
        let d = Deny::new(["mm_struct.owner", "f", "kvm_unmap_hva_range", "brackets", ""]);
        assert!(d.member("mm_struct", "owner"));
        assert!(!d.member("mm_struct", "mm"));
        assert!(d.member("mm_struct", "owner.x"));
        assert!(d.function("f") && !d.function("g"));
        assert!(d.type_name("btf_trace_kvm_unmap_hva_range"));
        assert!(!d.type_name("btf_trace_other"));
        assert!(d.tracepoint("kvm", "kvm_unmap_hva_range") && !d.tracepoint("kvm", "kvm_age_hva"));
        assert!(Deny::new(["syscalls:sys_enter_clone"]).tracepoint("syscalls", "sys_enter_clone"));
        assert_eq!(d.family("brackets").as_deref(), Some("family brackets denied by --probes.deny"));
        assert!(d.family("fork").is_none());
        assert_eq!(d.names().count(), 4);
    }
}
