//! The probe table: every probe family, one file each, in attach order. Adding a family is a file here and a row in
//! [`FAMILIES`]; the types the rows are written in are in [`super::spec`].

mod brackets;
mod causes;
mod fork_copies;
mod interval_notifiers;
mod overlapping_brackets;
mod secondary_tlb;
mod subscribers;

pub use causes::CAUSES;
pub use overlapping_brackets::OVERLAPPING_BRACKETS;

use super::spec::{Hook, Need};

/// Every probe family, in attach order.
pub static FAMILIES: &[&super::spec::Family] = &[
    &brackets::BRACKETS,
    &secondary_tlb::SECONDARY_TLB,
    &overlapping_brackets::OVERLAPPING_BRACKETS,
    &fork_copies::FORK_COPIES,
    &causes::CAUSES,
    &interval_notifiers::INTERVAL_NOTIFIERS,
    &subscribers::SUBSCRIBERS,
];

/// The do-nothing fentry program used to probe for trampoline support, and the functions
/// it is loaded against (the first one present in BTF).
pub const FENTRY_PROBE_PROGRAM: &str = "probe_fentry";
pub const FENTRY_PROBE_TARGETS: &[&str] = &[brackets::START, "do_nanosleep", "vfs_read"];
/// The subscriber-callback timers (entry and return), attached outside the table by `crate::subscribers` to each
/// invalidation callback found at start-up.
pub const CALLBACK_ENTRY_PROGRAM: &str = "callback_entry_kprobe";
pub const CALLBACK_RETURN_PROGRAM: &str = "callback_return_kretprobe";
/// Functions with more than six arguments on common kernels, to probe for wide trampolines.
pub const WIDE_PROBE_TARGETS: &[&str] = &["migrate_pages", "copy_huge_pmd", "copy_huge_pud"];

/// Every function the planner may look up in kallsyms (fentry and kprobe targets, `Function` and `TrampolineArgs`
/// needs, each name of an `a|b` list), so that only these are read from it.
pub fn kallsyms_functions() -> Vec<&'static str> {
    let mut names = Vec::new();
    for alt in FAMILIES.iter().flat_map(|f| f.alternatives) {
        let whens = alt.programs.iter().filter_map(|p| p.when.as_ref());
        for need in alt.needs.iter().chain(whens) {
            if let Need::Function(n) | Need::TrampolineArgs(n) = need {
                names.extend(n.split('|'));
            }
        }
        for p in alt.programs {
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
    use crate::probes::spec::{FamilyId, Mode};

    #[test]
    fn no_two_rows_share_a_family_id() {
        let ids: Vec<FamilyId> = FAMILIES.iter().map(|f| f.id).collect();
        for id in &ids {
            assert_eq!(ids.iter().filter(|i| *i == id).count(), 1, "{id} has two rows");
        }
        assert!(!ids.contains(&FamilyId::SubscriberCallbacks), "the callback timers attach outside the table");
    }

    #[test]
    fn alternatives_are_ordered_by_preference_and_programs_are_unique() {
        let rank = |m: Mode| match m {
            Mode::Fentry => 0,
            Mode::Kprobe => 1,
            Mode::Tracepoint => 2,
        };
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            assert!(f.alternatives.windows(2).all(|w| rank(w[0].mode) <= rank(w[1].mode)), "{}", f.id);
            for a in f.alternatives {
                assert!(!a.programs.is_empty());
                // A program may attach to several targets within one alternative, never in two.
                let mine: std::collections::HashSet<_> = a.programs.iter().map(|p| p.program).collect();
                for p in mine {
                    assert!(seen.insert(p), "program {p} used by two alternatives");
                }
            }
        }
    }
}
