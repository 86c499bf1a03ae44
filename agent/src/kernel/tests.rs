//! Tests against this machine's real BTF, cross-checked with `bpftool`'s own BTF dump.

use std::{collections::HashMap, path::Path, process::Command};

use super::*;

/// [`KernelInfo::probe_with`] as the agent calls it, with nothing denied.
fn probe(btf_path: &Path) -> anyhow::Result<KernelInfo> {
    KernelInfo::probe_with(btf_path, Deny::default(), &crate::probes::families::kallsyms_functions())
}

fn host_btf() -> KernelBtf {
    KernelBtf::open(Path::new(KernelBtf::DEFAULT_PATH)).expect("this machine's /sys/kernel/btf/vmlinux")
}

/// Direct members of `strukt` as bpftool prints them: name → byte offset.
/// A struct or union of `bpftool btf dump … format raw` by type id: its name and its members (name, type id, bit
/// offset).
type RawTypes<'a> = HashMap<&'a str, (&'a str, Vec<(&'a str, &'a str, u32)>)>;

fn bpftool_members(dump: &str, strukt: &str) -> HashMap<String, u32> {
    // `[id] STRUCT|UNION 'name' …` headers, each followed by its members: `\t'name' type_id=N bits_offset=B`.
    let mut types: RawTypes<'_> = HashMap::new();
    let mut current: Option<&str> = None;
    for line in dump.lines() {
        if let Some(member) = line.strip_prefix('\t') {
            let Some(id) = current else { continue };
            let parsed = (|| {
                let name = member.strip_prefix('\'')?.split('\'').next()?;
                let ty = member.split("type_id=").nth(1)?.split_whitespace().next()?;
                let bits = member.split("bits_offset=").nth(1)?.split_whitespace().next()?.parse().ok()?;
                Some((name, ty, bits))
            })();
            if let (Some(m), Some(t)) = (parsed, types.get_mut(id)) {
                t.1.push(m);
            }
            continue;
        }
        current = None;
        let Some((id, rest)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else { continue };
        if let Some(name) = ["STRUCT '", "UNION '"].iter().find_map(|k| rest.strip_prefix(k)) {
            types.insert(id, (name.split('\'').next().unwrap_or(""), Vec::new()));
            current = Some(id);
        }
    }
    // Members of anonymous structs and unions are members of the enclosing struct, at the sum of the offsets.
    fn flatten(types: &RawTypes<'_>, id: &str, base: u32, out: &mut HashMap<String, u32>) {
        for (name, ty, bits) in types.get(id).map(|t| t.1.as_slice()).unwrap_or_default() {
            if *name == "(anon)" {
                flatten(types, ty, base + bits, out);
            } else {
                out.entry(name.to_string()).or_insert((base + bits) / 8);
            }
        }
    }
    let mut out = HashMap::new();
    if let Some((id, _)) = types.iter().find(|(_, t)| t.0 == strukt) {
        flatten(&types, id, 0, &mut out);
    }
    out
}

#[test]
fn mmu_notifier_range_layout_on_this_kernel() {
    let btf = host_btf();
    let field = |m: &str| btf.member("mmu_notifier_range", m).unwrap().map(|f| (f.offset, f.size));
    let layout: Vec<_> =
        ["vma", "mm", "start", "end", "flags", "event", "owner"].iter().map(|m| (*m, field(m))).collect();
    println!("struct mmu_notifier_range on {}: {layout:?}", release());
    if field("vma").is_none() {
        // Since 6.3 (`vma` removed): the layout this project's development kernel has.
        assert_eq!(field("mm"), Some((0, 8)));
        assert_eq!(field("start"), Some((8, 8)));
        assert_eq!(field("end"), Some((16, 8)));
        assert_eq!(field("flags"), Some((24, 4)));
        assert_eq!(field("event"), Some((28, 4)));
    } else {
        assert_eq!(field("vma"), Some((0, 8)));
        assert_eq!(field("mm"), Some((8, 8)));
        assert_eq!(field("event"), Some((36, 4)));
    }
}

#[test]
fn mmu_notifier_event_values() {
    let btf = host_btf();
    let values = btf.enum_values("mmu_notifier_event").unwrap();
    println!("enum mmu_notifier_event: {values:?}");
    let expected = ["UNMAP", "CLEAR", "PROTECTION_VMA", "PROTECTION_PAGE", "SOFT_DIRTY", "RELEASE", "MIGRATE"];
    for (i, name) in expected.iter().enumerate() {
        assert_eq!(btf.enum_value("mmu_notifier_event", &format!("MMU_NOTIFY_{name}")).unwrap(), Some(i as u64));
    }
    let info = probe(Path::new(KernelBtf::DEFAULT_PATH)).unwrap();
    assert_eq!(info.events.name(1), "clear");
    assert_eq!(info.events.name(0), "unmap");
    assert_eq!(info.events.name(999), "unknown");
}

#[test]
fn layout_matches_bpftool() {
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file", KernelBtf::DEFAULT_PATH, "format", "raw"])
        .output()
        .expect("bpftool is needed for this test (cargo xtask setup installs it)");
    assert!(out.status.success(), "bpftool failed: {}", String::from_utf8_lossy(&out.stderr));
    let dump = String::from_utf8_lossy(&out.stdout);
    let btf = host_btf();
    for (strukt, member) in [
        ("mmu_notifier_range", "mm"),
        ("mmu_notifier_range", "event"),
        ("mmu_notifier_range", "flags"),
        ("mm_struct", "owner"),
        ("task_struct", "cgroups"),
        ("css_set", "subsys"),
        ("css_set", "dfl_cgrp"),
        ("cgroup_subsys_state", "cgroup"),
        ("cgroup", "kn"),
        ("kernfs_node", "id"),
    ] {
        let ours = btf.member(strukt, member).unwrap().unwrap_or_else(|| panic!("{strukt}.{member} missing"));
        let theirs = bpftool_members(&dump, strukt);
        let theirs = theirs.get(member).unwrap_or_else(|| panic!("bpftool shows no {strukt}.{member}"));
        assert_eq!(ours.offset, *theirs, "{strukt}.{member}");
    }
}

#[test]
fn resolved_layout_is_complete_here() {
    let btf = host_btf();
    let r = ResolvedLayout::resolve(&btf).unwrap();
    for g in [
        FieldGroup::NotifierRange,
        FieldGroup::TaskCgroup,
        FieldGroup::MmOwner,
        FieldGroup::GfpMask,
        FieldGroup::NotifierOps,
    ] {
        assert_eq!(r.group(g), Ok(()), "{g:?}");
    }
    assert_ne!(r.layout.memory_cgrp_id, u32::MAX, "this kernel has a memory controller");
    // Fork's eager copies allocate with gfp 0x140cca on this kernel (kernel.md §2.1), which
    // contains GFP_HIGHUSER_MOVABLE; page tables (0x440dc0) must not match.
    let mask = r.layout.gfp_highuser_movable;
    println!("GFP_HIGHUSER_MOVABLE from BTF = {mask:#x}");
    if r.group(FieldGroup::GfpMask).is_ok() {
        assert_eq!(0x140cca & mask, mask);
        assert_ne!(0x440dc0 & mask, mask);
    }
    assert_eq!(Some(r.layout.memory_cgrp_id as u64), btf.enum_value("cgroup_subsys_id", "memory_cgrp_id").unwrap());
}

#[test]
fn missing_members_are_reported_not_guessed() {
    let btf = host_btf();
    assert_eq!(btf.member("mmu_notifier_range", "no_such_field").unwrap(), None);
    assert_eq!(btf.member("no_such_struct", "mm").unwrap(), None);
    assert_eq!(btf.function("no_such_function_xyz").unwrap(), None);
    // Dotted paths descend into nested structs.
    let wq = btf.member("mmu_notifier_subscriptions", "wq").unwrap().unwrap();
    let head = btf.member("mmu_notifier_subscriptions", "wq.head").unwrap().unwrap();
    assert!(head.offset >= wq.offset && head.offset < wq.offset + wq.size);
}

#[test]
fn generation_and_prototypes() {
    let btf = host_btf();
    let start = btf.function("__mmu_notifier_invalidate_range_start").unwrap().expect("in BTF");
    assert_eq!(start.params, vec!["range".to_string()]);
    let generation = Generation::detect(&btf).unwrap();
    let has_arch = btf.function("__mmu_notifier_arch_invalidate_secondary_tlbs").unwrap().is_some();
    let has_old = btf.function("__mmu_notifier_invalidate_range").unwrap().is_some();
    println!("generation: {generation:?} (arch_invalidate_secondary_tlbs={has_arch}, invalidate_range={has_old})");
    assert_eq!(generation == Generation::ArchInvalidateSecondaryTlbs, has_arch);
    assert_eq!(generation == Generation::InvalidateRange, has_old && !has_arch);
}

#[test]
fn bad_btf_file_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("mmuscope-btf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bogus = dir.join("not-btf");
    std::fs::write(&bogus, b"this is not BTF").unwrap();
    let err = probe(&bogus).err().expect("must fail").to_string();
    assert!(err.contains("BTF"), "{err}");
    let err = format!("{:#}", probe(&dir.join("absent")).err().unwrap());
    assert!(err.contains("absent"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The name index finds what btf-rs's own scan finds, for every kind the planner asks about, and the memfd copy (what
/// kernels before 6.15 get) answers like the mapped file.
#[test]
fn name_index_agrees_with_a_full_scan_and_the_memfd_copy_with_the_file() {
    let path = Path::new(KernelBtf::DEFAULT_PATH);
    let mapped = btf_source::map(path).unwrap();
    let copied = btf_source::map_copy(path).unwrap();
    let index = btf_source::NameIndex::build(&mapped);
    let names = [
        "mmu_notifier_range",
        "task_struct",
        "__mmu_notifier_invalidate_range_start",
        "mmu_notifier_event",
        "btf_trace_mm_page_alloc",
        "int",
        "no_such_type_anywhere",
    ];
    for name in names {
        let scanned = mapped.resolve_ids_by_name(name).unwrap();
        let found: Vec<u32> = index
            .candidates(name)
            .filter(|id| {
                let t = mapped.resolve_type_by_id(*id).unwrap();
                mapped.resolve_name(t.as_btf_type().unwrap()).unwrap() == name
            })
            .collect();
        assert_eq!(found, scanned, "{name}");
        assert_eq!(copied.resolve_ids_by_name(name).unwrap(), scanned, "{name} in the memfd copy");
    }
    let btf = host_btf();
    assert_eq!(
        btf.member("task_struct", "mm").unwrap(),
        KernelBtf::from_bytes(path, &std::fs::read(path).unwrap()).unwrap().member("task_struct", "mm").unwrap()
    );
}
