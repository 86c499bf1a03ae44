//! The `cause` label values a truth names, as docs/probes.md documents them. Written here from the documentation, not
//! imported from the agent (`mmuscope_abi::Cause`): a truth that shared the agent's enum could not notice the agent
//! naming a cause wrongly.

use serde::{Deserialize, Serialize};

/// Why a bracket happened: a system call from the task's context, or the caller a hook names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Madvise,
    Munmap,
    Mremap,
    Mprotect,
    Fork,
    Exit,
    PageFault,
    Reclaim,
    Migration,
    ThpSplit,
    Khugepaged,
    /// ksmd merging pages (`write_protect_page`, `replace_page`).
    Ksm,
    /// A system call the agent has no cause of its own for (e.g. a write to debugfs `split_huge_pages`).
    OtherSyscall,
    /// The copy on write of a KSM page (`wp_page_copy` of a page whose mapping says KSM): a hook cause of the
    /// `ksm_cow` family, which the agent attaches only with `--probes.ksm-cow`.
    KsmCow,
}

impl Cause {
    /// The label value (the `snake_case` name).
    pub fn label(self) -> &'static str {
        match self {
            Cause::Madvise => "madvise",
            Cause::Munmap => "munmap",
            Cause::Mremap => "mremap",
            Cause::Mprotect => "mprotect",
            Cause::Fork => "fork",
            Cause::Exit => "exit",
            Cause::PageFault => "page_fault",
            Cause::Reclaim => "reclaim",
            Cause::Migration => "migration",
            Cause::ThpSplit => "thp_split",
            Cause::Khugepaged => "khugepaged",
            Cause::Ksm => "ksm",
            Cause::OtherSyscall => "other_syscall",
            Cause::KsmCow => "ksm_cow",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cause;

    #[test]
    fn labels_are_the_serde_names() {
        for c in
            [Cause::Madvise, Cause::PageFault, Cause::ThpSplit, Cause::Khugepaged, Cause::OtherSyscall, Cause::KsmCow]
        {
            assert_eq!(serde_json::to_value(c).unwrap(), c.label());
        }
    }
}
