//! Which subscriber a callback belongs to, from its symbol: known callback prefixes first
//! (kernel.md §7: KVM, IOMMU SVA, GPU and RDMA drivers), then the symbol's module, else
//! `unknown` (built-in code we do not know, or an address kallsyms does not name).

use super::symbols::Symbol;

/// KVM's kind; also the `subscriber` of every tracepoint-mode count (`kvm:kvm_unmap_hva_range` is KVM's own).
pub const KVM: &str = "kvm";

/// `(symbol prefix, subscriber)`; the first match wins.
pub const KNOWN: &[(&str, &str)] = &[
    ("kvm_mmu_notifier_", KVM),
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

/// The `subscriber` label of brackets and double notifications: the kinds a subscriber mask's slots name, sorted
/// and joined with `+` (`kvm`, `kvm+mmuscope_mirror`); `none` for an empty mask; `other` for an ops the programs
/// could not give a slot. Kinds, not instances: two VMs (two notifiers of one ops) are one `kvm`.
pub const LABEL: &str = "subscriber";
pub const NONE: &str = "none";
pub const OTHER: &str = "other";

/// The label of subscriber mask `mask` (see [`LABEL`]), given the kind of each slot (`slot_kinds`; a slot
/// without one reads `unknown`: its callback is still being named).
pub fn mask_label(mask: u32, slot_kinds: &std::collections::BTreeMap<u32, String>) -> String {
    let mut kinds: Vec<&str> = (0..mmuscope_abi::subscriber_mask::SLOTS)
        .filter(|slot| mask & (1 << slot) != 0)
        .map(|slot| slot_kinds.get(&slot).map_or("unknown", String::as_str))
        .collect();
    if mask & mmuscope_abi::subscriber_mask::OTHER != 0 {
        kinds.push(OTHER);
    }
    kinds.sort_unstable();
    kinds.dedup();
    if kinds.is_empty() { NONE.to_string() } else { kinds.join("+") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_is_named_by_its_kinds_sorted_and_once() {
        let kinds = [(0, "mmuscope_mirror"), (1, "kvm"), (2, "kvm")].map(|(s, k)| (s, k.to_string())).into();
        assert_eq!(mask_label(0b010, &kinds), "kvm");
        assert_eq!(mask_label(0b011, &kinds), "kvm+mmuscope_mirror");
        // Two ops of one kind are one kind; a slot not named yet reads `unknown`.
        assert_eq!(mask_label(0b110, &kinds), "kvm");
        assert_eq!(mask_label(0b1010, &kinds), "kvm+unknown");
        assert_eq!(mask_label(mmuscope_abi::subscriber_mask::OTHER | 0b10, &kinds), "kvm+other");
        assert_eq!(mask_label(0, &kinds), NONE);
    }
}
