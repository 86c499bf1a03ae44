//! The KSM copy-on-write family, off by default: brackets opened while a write fault copies a KSM page (the write
//! that breaks the page's sharing, or an unsharing GUP) get `cause="ksm_cow"` instead of `page_fault`.
//!
//! Telling them apart needs a window over the copy of every write fault on the host (`wp_page_copy`), whatever the
//! process, so it costs every copy-on-write fault one entry and one return program (a hash update and a delete):
//! a host-wide price, so the family attaches only with `--probes.ksm-cow` (issue 21). Tracepoint mode has no hook on
//! that path: the cause stays `page_fault` there.

use crate::{
    kernel::FieldGroup,
    probes::spec::{Family, FamilyId, Need, Traced, TracedHook},
};

/// The flag (and config key `[probes] ksm-cow`) that switches the family on.
pub const FLAG: &str = "--probes.ksm-cow";

/// The copy of a write fault, `wp_page_copy(vmf)` (5.10, 6.1); where it is inlined into its only caller (6.12 and
/// 7.2: no BTF function, no symbol), `do_wp_page(vmf)`, whose only bracket is that copy's. `vmf->page` is the page
/// being copied by the time the bracket opens in either.
const COPY: &str = "wp_page_copy|do_wp_page";

/// The family's name, as `check`, `--probes.deny` and `probe_attached{probe}` show it.
pub const ID: FamilyId = FamilyId::new("ksm_cow");

pub static KSM_COW: Family = Family {
    id: ID,
    description: "cause=\"ksm_cow\" for the brackets of a write fault's copy of a KSM page; off by default \
                  (--probes.ksm-cow): every copy-on-write fault on the host runs its two programs",
    required: false,
    traced: Traced {
        // The causes family's windows (reclaim inside the copy's allocation) come first: the lookup sits after
        // them in the bracket programs, behind their switch.
        needs: &[
            Need::OptIn(FLAG),
            Need::ModeAvailable,
            Need::SameModeAs(super::causes::ID),
            Need::Hookable(COPY),
            Need::Fields(FieldGroup::KsmPage),
        ],
        hooks: &[TracedHook::entry_and_exit("cause_ksm_cow", COPY)],
        kprobe_degraded: "higher per-event cost",
    },
    fallbacks: &[],
};

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_flag_is_the_command_lines() {
        let cli = crate::cli::Cli::command();
        for command in ["run", "check"] {
            let sub = cli.find_subcommand(command).unwrap();
            assert!(
                sub.get_arguments().any(|a| a.get_long().is_some_and(|l| format!("--{l}") == super::FLAG)),
                "`mmuscope {command}` has no {}",
                super::FLAG
            );
        }
    }
}
