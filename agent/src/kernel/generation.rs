//! Which secondary-TLB notification API the kernel has, told by BTF rather than by version:
//! before 6.6 `__mmu_notifier_invalidate_range` plus an `only_end` argument on
//! `__mmu_notifier_invalidate_range_end`; from 6.6 `__mmu_notifier_arch_invalidate_secondary_tlbs`.

use super::btf::{BtfError, KernelBtf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Generation {
    /// `->invalidate_range` called in the PTL and again from `invalidate_range_end` unless
    /// `only_end` (kernels before 6.6).
    InvalidateRange,
    /// `->arch_invalidate_secondary_tlbs` from the architecture's TLB flush (6.6 and later).
    ArchInvalidateSecondaryTlbs,
    /// Neither entry point is in BTF (no `CONFIG_MMU_NOTIFIER`, or an unknown kernel).
    Unknown,
}

impl Generation {
    pub fn detect(btf: &KernelBtf) -> Result<Self, BtfError> {
        if btf.function("__mmu_notifier_arch_invalidate_secondary_tlbs")?.is_some() {
            return Ok(Self::ArchInvalidateSecondaryTlbs);
        }
        let end_has_only_end =
            btf.function("__mmu_notifier_invalidate_range_end")?.is_some_and(|p| p.params.len() == 2);
        if btf.function("__mmu_notifier_invalidate_range")?.is_some() || end_has_only_end {
            return Ok(Self::InvalidateRange);
        }
        Ok(Self::Unknown)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::InvalidateRange => "pre-6.6: __mmu_notifier_invalidate_range + invalidate_range_end(range, only_end)",
            Self::ArchInvalidateSecondaryTlbs => "6.6+: __mmu_notifier_arch_invalidate_secondary_tlbs",
            Self::Unknown => "unknown: no mmu_notifier secondary-TLB entry point in BTF",
        }
    }
}
