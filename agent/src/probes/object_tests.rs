//! The probe table held against the embedded eBPF object, without privileges (the object is parsed as aya parses it,
//! nothing is loaded): every program the agent attaches by name is in the object, and every program in the object
//! is attached by something. Program names are typed twice — as table strings and as function names in
//! `agent-ebpf/programs` — and a mismatch would otherwise show only on a kernel, as an unavailable family.

use std::collections::BTreeSet;

use mmuscope_abi::names;

use super::{OBJECT, births, families};
use crate::cgroup_maps;

/// Loaded only by the benchmark fixture (`tests/src/bin/mmuscope-bench-fixture/floor.rs`), never by the agent.
const BENCHMARK_PROGRAMS: [&str; 3] = ["floor_tp_btf", "floor_tracepoint", "floor_count_tp_btf"];

fn object() -> aya_obj::Object {
    aya_obj::Object::parse(OBJECT).expect("the embedded eBPF object parses")
}

#[test]
fn the_tables_programs_and_the_objects_programs_match() {
    let object = object();
    let in_object: BTreeSet<&str> = object.programs.keys().map(String::as_str).collect();
    let table: BTreeSet<String> = families::FAMILIES
        .iter()
        .flat_map(|f| f.alternatives())
        .flat_map(|a| a.programs)
        .map(|p| p.program.to_string())
        .collect();
    let table: BTreeSet<&str> = table.iter().map(String::as_str).collect();
    // Attached outside the table: the trampoline probe, the cgroup-birth reader, the callback timers.
    let outside: BTreeSet<&str> = [
        families::FENTRY_PROBE_PROGRAM,
        births::PROGRAM,
        families::CALLBACK_ENTRY_PROGRAM,
        families::CALLBACK_RETURN_PROGRAM,
    ]
    .into_iter()
    .chain(BENCHMARK_PROGRAMS)
    .collect();
    assert!(
        table.is_disjoint(&outside),
        "programs both in the table and outside it: {:?}",
        table.intersection(&outside)
    );
    let named: BTreeSet<&str> = table.union(&outside).copied().collect();
    let missing: Vec<_> = named.difference(&in_object).collect();
    assert!(missing.is_empty(), "named by the agent but not in the eBPF object: {missing:?}");
    let unattached: Vec<_> = in_object.difference(&named).collect();
    assert!(unattached.is_empty(), "in the eBPF object but attached by nothing: {unattached:?}");
}

#[test]
fn the_per_cgroup_maps_are_the_objects() {
    let object = object();
    let percpu_hash = aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_PERCPU_HASH as u32;
    for m in cgroup_maps::MAPS {
        let map = object.maps.get(m.name).unwrap_or_else(|| panic!("map {} is not in the eBPF object", m.name));
        let sizes = (map.key_size() as usize, map.value_size() as usize);
        assert_eq!(sizes, (m.key_size, m.value_size), "key and value sizes of {}", m.name);
        assert_eq!(map.map_type(), percpu_hash, "type of {}", m.name);
    }
    for name in [names::COUNTERS, names::CALLBACK_STATS, names::CGROUP_BIRTHS] {
        assert!(object.maps.contains_key(name), "map {name} is not in the eBPF object");
    }
}
