//! Which subscriber a callback belongs to, from its symbol: known callback prefixes first
//! (kernel.md §7: KVM, IOMMU SVA, GPU and RDMA drivers), then the symbol's module, else
//! `unknown` (built-in code we do not know, or an address kallsyms does not name).

use super::symbols::Symbol;

/// `(symbol prefix, subscriber)`; the first match wins.
pub const KNOWN: &[(&str, &str)] = &[
    ("kvm_mmu_notifier_", "kvm"),
    ("intel_arch_invalidate_secondary_tlbs", "intel_iommu_sva"),
    ("intel_invalidate_range", "intel_iommu_sva"),
    ("intel_mm_", "intel_iommu_sva"),
    ("sva_arch_invalidate_secondary_tlbs", "iommu_sva"),
    ("sva_mn_", "iommu_sva"),
    ("arm_smmu_mm_", "arm_smmu_sva"),
    ("gru_", "sgi_gru"),
    ("uvm_mmu_notifier_", "nvidia_uvm"),
    ("amdgpu_hmm_invalidate_", "amdgpu"),
    ("svm_range_cpu_invalidate_pagetables", "amdkfd"),
    ("nouveau_svm_", "nouveau"),
    ("i915_gem_userptr_", "i915"),
    ("vma_userptr_invalidate", "xe"),
    ("drm_gpusvm_", "drm_gpusvm"),
    ("radeon_mn_", "radeon"),
    ("mlx5_ib_invalidate_range", "mlx5_ib"),
    ("gntdev_", "xen_gntdev"),
    ("dmirror_", "test_hmm"),
];

/// The symbol prefixes of known subscribers' callbacks (preloaded from kallsyms at start-up).
pub fn known_prefixes() -> Vec<&'static str> {
    KNOWN.iter().map(|(p, _)| *p).collect()
}

/// The subscriber kind of a callback symbol.
pub fn kind(sym: Option<&Symbol>) -> String {
    let Some(sym) = sym else { return "unknown".into() };
    if let Some((_, k)) = KNOWN.iter().find(|(prefix, _)| sym.name.starts_with(prefix)) {
        return (*k).into();
    }
    sym.module.clone().unwrap_or_else(|| "unknown".into())
}
