//! The probe table: every probe family, one file each, in attach order. Adding a family is a file here (its `ID` and
//! its row) and the row in [`FAMILIES`]; the types the rows are written in are in [`super::spec`].

pub mod brackets;
pub mod causes;
pub mod change_pte;
pub mod fork_copies;
pub mod fork_hugetlb;
pub mod interval_notifiers;
pub mod ksm_cow;
pub mod overlapping_brackets;
pub mod secondary_tlb;
pub mod subscribers;

use super::spec::{FamilyId, Hook, Need};

/// Every probe family, in attach order.
pub static FAMILIES: &[&super::spec::Family] = &[
    &brackets::BRACKETS,
    &secondary_tlb::SECONDARY_TLB,
    &change_pte::CHANGE_PTE_FAMILY,
    &overlapping_brackets::OVERLAPPING_BRACKETS,
    &fork_copies::FORK_COPIES,
    &fork_hugetlb::FORK_HUGETLB,
    &causes::CAUSES,
    &ksm_cow::KSM_COW,
    &interval_notifiers::INTERVAL_NOTIFIERS,
    &subscribers::SUBSCRIBERS,
];

/// The do-nothing fentry program used to probe for trampoline support, and the functions
/// it is loaded against (the first one present in BTF).
pub const FENTRY_PROBE_PROGRAM: &str = "probe_fentry";
pub const FENTRY_PROBE_TARGETS: &[&str] = &[brackets::START, "do_nanosleep", "vfs_read"];
/// The subscriber-callback timers (entry and return), attached outside the table by `crate::subscribers` to each
/// invalidation callback found at start-up, reported as this family.
pub const SUBSCRIBER_CALLBACKS: FamilyId = FamilyId::new("subscriber_callbacks");
pub const CALLBACK_ENTRY_PROGRAM: &str = "callback_entry_kprobe";
pub const CALLBACK_RETURN_PROGRAM: &str = "callback_return_kretprobe";
/// Functions with more than six arguments on common kernels, to probe for wide trampolines.
pub const WIDE_PROBE_TARGETS: &[&str] = &["migrate_pages", "copy_huge_pmd", "copy_huge_pud"];

/// Every function the planner may look up in kallsyms (fentry and kprobe targets, `Function` and `TrampolineArgs`
/// needs, each name of an `a|b` list), so that only these are read from it.
pub fn kallsyms_functions() -> Vec<&'static str> {
    let mut names = Vec::new();
    for alt in FAMILIES.iter().flat_map(|f| f.alternatives()) {
        let whens = alt.programs.iter().filter_map(|p| p.when.as_ref());
        for need in alt.needs.iter().chain(whens) {
            if let Need::Function(n) | Need::Hookable(n) = need {
                names.extend(n.split('|'));
            }
        }
        for p in &alt.programs {
            if matches!(p.hook, Hook::FEntry | Hook::FExit | Hook::KProbe | Hook::KRetProbe) {
                names.extend(p.target.split('|'));
            }
        }
    }
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::spec::Mode;

    #[test]
    fn no_two_rows_share_a_family_id() {
        let ids: Vec<FamilyId> = FAMILIES.iter().map(|f| f.id).collect();
        for id in &ids {
            assert_eq!(ids.iter().filter(|i| *i == id).count(), 1, "{id} has two rows");
        }
        assert!(!ids.contains(&SUBSCRIBER_CALLBACKS), "the callback timers attach outside the table");
    }

    #[test]
    fn alternatives_are_ordered_by_preference_and_programs_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            let modes: Vec<Mode> = f.alternatives().iter().map(|a| a.mode).collect();
            assert_eq!(modes[..2], [Mode::Fentry, Mode::Kprobe], "{}", f.id);
            assert!(modes[2..].iter().all(|m| *m == Mode::Tracepoint), "{}", f.id);
            for a in f.alternatives() {
                assert!(!a.programs.is_empty());
                // A program may attach to several targets within one alternative, never in two.
                let mine: std::collections::HashSet<_> = a.programs.iter().map(|p| p.program).collect();
                for p in mine {
                    assert!(seen.insert(p), "program {p} used by two alternatives");
                }
            }
        }
    }

    /// The fentry and kprobe alternatives of every family need the same and hook the same, program for program,
    /// except where a return hook reads the arguments: fexit sees them, a kretprobe needs an entry kprobe beside it.
    #[test]
    fn fentry_and_kprobe_alternatives_are_one_list() {
        use crate::probes::spec::{Hook, ProgramSpec};
        let kind = |p: &ProgramSpec| match p.hook {
            Hook::FEntry | Hook::KProbe => Hook::KProbe,
            Hook::FExit | Hook::KRetProbe => Hook::KRetProbe,
            other => other,
        };
        let base = |p: &ProgramSpec, suffixes: [&str; 2]| {
            let name = p.program.to_string();
            let base = suffixes.iter().find_map(|s| name.strip_suffix(s)).map(str::to_string);
            base.unwrap_or_else(|| panic!("{name} does not end in one of {suffixes:?}"))
        };
        for f in FAMILIES {
            let alternatives = f.alternatives();
            let (fentry, kprobe) = (&alternatives[0], &alternatives[1]);
            assert_eq!(fentry.needs, kprobe.needs, "{}", f.id);
            let mut kprobes = kprobe.programs.iter().peekable();
            for (i, p) in fentry.programs.iter().enumerate() {
                let mut k = kprobes.next().unwrap_or_else(|| panic!("{}: no kprobe program for {}", f.id, p.program));
                let entered =
                    i > 0 && fentry.programs[i - 1].hook == Hook::FEntry && fentry.programs[i - 1].target == p.target;
                if p.hook == Hook::FExit && !entered && k.hook == Hook::KProbe {
                    // The entry kprobe that keeps the arguments for the kretprobe after it.
                    assert_eq!((k.target, k.when), (p.target, p.when), "{}: {}", f.id, k.program);
                    k = kprobes.next().unwrap_or_else(|| panic!("{}: no kretprobe after {}", f.id, k.program));
                }
                assert_eq!(
                    (k.target, k.when, kind(k)),
                    (p.target, p.when, kind(p)),
                    "{}: {} vs {}",
                    f.id,
                    p.program,
                    k.program
                );
                let (fentry_base, kprobe_base) = (base(p, ["_fentry", "_fexit"]), base(k, ["_kprobe", "_kretprobe"]));
                // One kprobe program may serve several targets (the operation boundaries).
                assert!(
                    fentry_base == kprobe_base || f.id == overlapping_brackets::ID,
                    "{}: {} vs {}",
                    f.id,
                    p.program,
                    k.program
                );
            }
            assert!(kprobes.next().is_none(), "{}: kprobe programs without a fentry counterpart", f.id);
        }
    }

    #[test]
    fn mode_relative_needs_are_only_in_the_fentry_kprobe_pair() {
        for f in FAMILIES {
            for a in &f.alternatives()[2..] {
                let whens = a.programs.iter().filter_map(|p| p.when.as_ref());
                for need in a.needs.iter().chain(whens) {
                    let relative = matches!(need, Need::ModeAvailable | Need::Hookable(_) | Need::FexitArity(..));
                    assert!(!relative, "{} {}: {need:?}", f.id, a.name);
                }
            }
        }
    }
}
