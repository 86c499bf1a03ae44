//! `--probes.deny` against this machine's real BTF: a hidden member makes exactly its field group unresolved, a
//! hidden function or tracepoint disappears; BTF from bytes parses like the file, and garbage is an error.

use std::path::Path;

use super::*;

fn host(deny: &[&str]) -> KernelBtf {
    KernelBtf::open(Path::new(KernelBtf::DEFAULT_PATH)).unwrap().hiding(Deny::new(deny.iter().copied()))
}

#[test]
fn a_hidden_member_fails_only_its_field_group() {
    let full = ResolvedLayout::resolve(&host(&[])).unwrap();
    let hidden = ResolvedLayout::resolve(&host(&["mm_struct.owner"])).unwrap();
    assert!(full.group(FieldGroup::MmOwner).is_ok(), "this kernel has mm_struct.owner (CONFIG_MEMCG)");
    assert_eq!(hidden.group(FieldGroup::MmOwner), Err("BTF lacks mm_struct.owner".to_string()));
    for g in [FieldGroup::NotifierRange, FieldGroup::TaskCgroup, FieldGroup::NotifierOps] {
        assert_eq!(hidden.group(g), full.group(g), "{g:?} must not change");
    }
}

#[test]
fn hidden_functions_enumerators_and_tracepoints_are_absent() {
    let name = "__mmu_notifier_invalidate_range_start";
    assert!(host(&[]).function(name).unwrap().is_some());
    let btf = host(&[name, "kvm_unmap_hva_range", "MMU_NOTIFY_CLEAR"]);
    assert!(btf.function(name).unwrap().is_none());
    assert!(host(&[]).has_type("btf_trace_kvm_unmap_hva_range"));
    assert!(!btf.has_type("btf_trace_kvm_unmap_hva_range"));
    assert_eq!(btf.enum_value("mmu_notifier_event", "MMU_NOTIFY_CLEAR").unwrap(), None);
    assert!(btf.enum_value("mmu_notifier_event", "MMU_NOTIFY_UNMAP").unwrap().is_some());
}

#[test]
fn btf_from_bytes_equals_the_file_and_garbage_is_an_error() {
    let path = Path::new(KernelBtf::DEFAULT_PATH);
    let bytes = std::fs::read(path).unwrap();
    let mem = KernelBtf::from_bytes(path, &bytes).unwrap();
    assert_eq!(
        mem.member("mmu_notifier_range", "event").unwrap(),
        host(&[]).member("mmu_notifier_range", "event").unwrap()
    );
    for garbage in [&b""[..], b"\x9f\xeb\x01\x00", &bytes[..bytes.len() / 2]] {
        assert!(KernelBtf::from_bytes(Path::new("garbage"), garbage).is_err(), "{} bytes accepted", garbage.len());
    }
}
