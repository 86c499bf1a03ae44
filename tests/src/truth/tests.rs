//! The schema round trip and the checks a truth must pass before a comparison.

use std::path::PathBuf;

use super::*;
use crate::cgroup::{CgroupPath, CgroupRef, HierarchyKind};

fn sample() -> GroundTruth {
    let cg = |id, root: &str| CgroupRef {
        path: CgroupPath::parse("/mmuscope-test/kvm-madvise-42").unwrap(),
        id,
        dir: PathBuf::from(root).join("mmuscope-test/kvm-madvise-42"),
    };
    let mut t = GroundTruth::new(
        ScenarioParams::KvmMadvise(KvmMadviseParams {
            iterations: 3,
            region_bytes: 2 << 20,
            page_bytes: 4096,
            interval_pages: 0,
        }),
        CgroupPlacement {
            default: cg(100, "/sys/fs/cgroup/unified"),
            memory_v1: Some(cg(200, "/sys/fs/cgroup/memory")),
            attribution: HierarchyKind::MemoryV1,
        },
        2,
        InvalidationTruth::from_sources(vec![
            BracketSource::new(NotifyEvent::Clear, 3, 2, "madvise", "zap"),
            BracketSource::new(NotifyEvent::Unmap, 1, 1, "munmap", "unmap_vmas"),
        ]),
    );
    t.pid = 42;
    t
}

fn fork_truth(copied: u64) -> ForkTruth {
    ForkTruth {
        forks: 1,
        child_pid: 43,
        pages: 64,
        pinned_pages: 64,
        copied_pages: copied,
        copied_bytes: copied * 4096,
        forks_with_pinned_pages: u64::from(copied > 0),
        thp_splits: 0,
        kernel_path: "copy_present_page".into(),
        forker_cgroup: None,
    }
}

#[test]
fn round_trip() {
    let t = sample();
    let json = t.to_json();
    assert_eq!(GroundTruth::from_json(&json).unwrap(), t);
}

#[test]
fn wire_names() {
    let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
    assert_eq!(v["scenario"], "kvm-madvise");
    assert_eq!(v["params"]["iterations"], 3);
    assert_eq!(v["cgroups"]["attribution"], "memory_v1");
    assert_eq!(v["cgroups"]["memory_v1"]["path"], "/mmuscope-test/kvm-madvise-42");
    assert_eq!(v["invalidations"]["brackets"]["clear"], 3);
    assert_eq!(v["invalidations"]["brackets"]["unmap"], 1);
    assert_eq!(v["invalidations"]["kvm_unmap_hva_range"], 7);
    let names: Vec<_> = [NotifyEvent::ProtectionVma, NotifyEvent::SoftDirty]
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    assert_eq!(names, ["\"protection_vma\"", "\"soft_dirty\""]);
}

#[test]
fn totals_and_expectation() {
    let t = sample();
    assert_eq!(t.invalidations.brackets_total(), 4);
    assert_eq!(t.expected_tracepoint_total(), 3 * 2 + 1);
    assert_eq!(t.cgroups.attributed().id, 200);
}

#[test]
fn unknown_fields_are_ignored_for_forward_compatibility() {
    let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
    v["fork_pinned"] = serde_json::json!({ "copies": 5 });
    assert_eq!(GroundTruth::from_json(&v.to_string()).unwrap(), sample());
}

#[test]
fn schema_1_documents_without_optional_parts_still_parse() {
    let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
    for s in v["invalidations"]["sources"].as_array_mut().unwrap() {
        s.as_object_mut().unwrap().remove("initiator_pid");
    }
    assert!(v.get("fork").is_none() && v.get("kernel_api").is_none(), "optional parts are omitted when absent");
    assert_eq!(GroundTruth::from_json(&v.to_string()).unwrap(), sample());
}

#[test]
fn new_scenarios_use_their_command_names() {
    let fork = ForkParams { pages: 512, page_bytes: 4096, thp: true, pinned: true };
    let t = GroundTruth { scenario: ScenarioParams::ForkPinnedThp(fork), ..sample() };
    let v: serde_json::Value = serde_json::from_str(&t.to_json()).unwrap();
    assert_eq!(v["scenario"], "fork-pinned-thp");
    assert_eq!(v["params"]["pages"], 512);
    assert_eq!(t.scenario.name(), "fork-pinned-thp");
    assert_eq!(GroundTruth::from_json(&t.to_json()).unwrap(), t);
}

#[test]
fn initiated_brackets_are_expected_from_the_initiator_pid() {
    let mut t = sample();
    t.invalidations = InvalidationTruth::from_sources(vec![
        BracketSource::new(NotifyEvent::Clear, 3, 2, "madvise", "zap"),
        BracketSource::new(NotifyEvent::Clear, 5, 1, "process_madvise", "collapse_huge_page").initiated_by(77),
    ]);
    assert_eq!(t.expected_tracepoint_by_pid(), BTreeMap::from([(42, 6), (77, 5)]));
    assert_eq!(t.expected_tracepoint_total(), 11);
    assert!(t.expected_tracepoint_by_cgroup().is_err(), "pid 77 is not placed yet");
    let mut placement = t.cgroups.clone();
    placement.memory_v1.as_mut().unwrap().path = CgroupPath::parse("/mmuscope-test/initiator").unwrap();
    t.cross_cgroup = Some(CrossCgroupTruth {
        initiator_pid: 77,
        initiator_cgroups: Some(placement),
        invalidations: 5,
        initiator_kind: "other_cgroup".into(),
    });
    assert_eq!(
        t.expected_tracepoint_by_cgroup().unwrap(),
        BTreeMap::from([("/mmuscope-test/initiator".to_owned(), 5), ("/mmuscope-test/kvm-madvise-42".to_owned(), 6)])
    );
    assert_eq!(GroundTruth::from_json(&t.to_json()).unwrap(), t);
    t.cross_cgroup.as_mut().unwrap().invalidations = 4;
    assert!(matches!(t.check(), Err(TruthError::Inconsistent(m)) if m.contains("pid 77")));
}

#[test]
fn hugetlb_fork_arithmetic_is_checked() {
    let mut t = sample();
    let h = HugetlbForkTruth {
        child_pid: 8,
        huge_pages: 4,
        huge_page_bytes: 2 << 20,
        pinned_huge_pages: 4,
        copied_huge_pages: 4,
        copied_bytes: 4 * (2 << 20),
        kernel_path: String::new(),
    };
    t.hugetlb_fork = Some(h.clone());
    t.check().unwrap();
    assert_eq!(GroundTruth::from_json(&t.to_json()).unwrap(), t);
    t.hugetlb_fork = Some(HugetlbForkTruth { copied_bytes: 4 * 4096, ..h.clone() });
    assert!(t.check().is_err(), "bytes are whole huge pages");
    t.hugetlb_fork = Some(HugetlbForkTruth { copied_huge_pages: 5, copied_bytes: 5 * (2 << 20), ..h });
    assert!(t.check().is_err(), "no more copies than huge pages");
}

#[test]
fn fork_arithmetic_is_checked() {
    let mut t = sample();
    for copied in [0, 1, 64] {
        t.fork = Some(fork_truth(copied));
        t.check().unwrap();
    }
    let mut f = fork_truth(64);
    f.copied_bytes = 64 * 4096 + 1;
    t.fork = Some(f);
    assert!(t.check().is_err(), "bytes must be whole pages");
    let mut f = fork_truth(3);
    f.forks_with_pinned_pages = 0;
    t.fork = Some(f);
    assert!(t.check().is_err(), "a fork that copied is a fork with pinned pages");
    let mut f = fork_truth(0);
    f.forks_with_pinned_pages = 1;
    t.fork = Some(f);
    assert!(t.check().is_err(), "a fork that copied nothing is not");
    t.fork = Some(ForkTruth { pages: 10, ..fork_truth(64) });
    assert!(t.check().is_err(), "cannot copy more pages than compared");
}

#[test]
fn per_api_expectations_add_up() {
    let src = |kind, count, bytes, api| DoubleSource::new(kind, count, bytes, api, "", "");
    let d = DoubleNotificationTruth {
        sources: vec![
            src(DoubleKind::OverlappingBrackets, 2, 2 << 20, None),
            src(DoubleKind::AvoidedOnlyEnd, 2, 0, Some(SecondaryTlbApi::InvalidateRange)),
            src(DoubleKind::EndAfterInLock, 0, 0, Some(SecondaryTlbApi::ArchInvalidateSecondaryTlbs)),
            src(DoubleKind::OverlappingBrackets, 1, 4096, None),
            src(DoubleKind::EndThenGather, 0, 0, Some(SecondaryTlbApi::InvalidateRange)).at_most(1, 8192),
        ],
    };
    let old = d.expected(SecondaryTlbApi::InvalidateRange);
    assert_eq!(old.len(), 3);
    let exact = |count, bytes| KindTotal { count, bytes, count_max: count, bytes_max: bytes };
    assert_eq!(old[&DoubleKind::OverlappingBrackets], exact(3, (2 << 20) + 4096));
    assert_eq!(old[&DoubleKind::AvoidedOnlyEnd], exact(2, 0));
    assert_eq!(
        old[&DoubleKind::EndThenGather],
        KindTotal { count: 0, bytes: 0, count_max: 1, bytes_max: 8192 },
        "a bound"
    );
    let new = d.expected(SecondaryTlbApi::ArchInvalidateSecondaryTlbs);
    assert_eq!(new[&DoubleKind::EndAfterInLock], KindTotal::default(), "listed with zero: specified as none");
    assert!(
        !new.contains_key(&DoubleKind::AvoidedOnlyEnd),
        "not listed for this API: none (the guest check closes the kinds)"
    );

    let tlb = SecondaryTlbTruth {
        sources: vec![SecondaryTlbSource {
            count_max: None,
            api: SecondaryTlbApi::InvalidateRange,
            context: TlbContext::Bracket,
            scope: Some(TlbScope::Range),
            count: 7,
            bytes: Some(7 * 4096),
            cause: String::new(),
            kernel_path: String::new(),
        }],
    };
    assert_eq!(tlb.expected(SecondaryTlbApi::InvalidateRange), BTreeMap::from([(TlbContext::Bracket, 7)]));
    assert!(tlb.expected(SecondaryTlbApi::ArchInvalidateSecondaryTlbs).is_empty());
    let v = serde_json::to_value(&tlb).unwrap();
    assert_eq!(v["sources"][0]["api"], "invalidate_range");
    assert_eq!(v["sources"][0]["scope"], "range");
}

#[test]
fn unreached_doubles_are_only_those_made_of_the_named_apis_calls() {
    use crate::truth::{DoubleKind, DoubleNotificationTruth, DoubleSource};
    let new = Some(SecondaryTlbApi::ArchInvalidateSecondaryTlbs);
    let doubles = DoubleNotificationTruth {
        sources: vec![
            DoubleSource::new(DoubleKind::OverlappingBrackets, 4, 4 * 4096, None, "brackets", ""),
            DoubleSource::new(DoubleKind::OverlappingSecondaryTlb, 4, 4 * 4096, new, "calls", ""),
            DoubleSource::new(
                DoubleKind::OverlappingSecondaryTlb,
                3,
                3 * 4096,
                Some(SecondaryTlbApi::InvalidateRange),
                "calls",
                "",
            ),
        ],
    }
    .unreached(SecondaryTlbApi::ArchInvalidateSecondaryTlbs, "no implementer");
    let figures: Vec<_> = doubles.sources.iter().map(|s| (s.count, s.redundant_bytes)).collect();
    assert_eq!(figures, [(4, 4 * 4096), (0, 0), (3, 3 * 4096)]);
    assert!(doubles.sources[1].cause.contains("no implementer"));
    let totals = doubles.expected(SecondaryTlbApi::ArchInvalidateSecondaryTlbs);
    assert_eq!(totals[&DoubleKind::OverlappingSecondaryTlb].count, 0, "still specified, as none");
}

#[test]
fn unreached_zeroes_only_the_named_api() {
    let src = |api, count| SecondaryTlbSource {
        api,
        context: TlbContext::Gather,
        scope: Some(TlbScope::Range),
        count,
        count_max: None,
        bytes: Some(count * 4096),
        cause: "flush".to_owned(),
        kernel_path: String::new(),
    };
    let tlb = SecondaryTlbTruth {
        sources: vec![src(SecondaryTlbApi::InvalidateRange, 3), src(SecondaryTlbApi::ArchInvalidateSecondaryTlbs, 5)],
    }
    .unreached(SecondaryTlbApi::ArchInvalidateSecondaryTlbs, "no implementer");
    assert_eq!(tlb.expected(SecondaryTlbApi::InvalidateRange), BTreeMap::from([(TlbContext::Gather, 3)]));
    assert_eq!(
        tlb.expected(SecondaryTlbApi::ArchInvalidateSecondaryTlbs),
        BTreeMap::from([(TlbContext::Gather, 0)]),
        "still listed, with zero: specified as none"
    );
    assert_eq!((tlb.sources[0].bytes, tlb.sources[1].bytes), (Some(3 * 4096), Some(0)));
    assert!(tlb.sources[1].cause.contains("no implementer"));
}

#[test]
fn rejects_wrong_version_and_inconsistent_totals() {
    let mut t = sample();
    t.schema_version = 99;
    assert!(matches!(GroundTruth::from_json(&t.to_json()), Err(TruthError::Version { found: 99 })));
    let mut t = sample();
    t.invalidations.kvm_unmap_hva_range += 1;
    assert!(matches!(GroundTruth::from_json(&t.to_json()), Err(TruthError::Inconsistent(_))));
    let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
    v["cgroups"]["default"]["path"] = "/a/../b".into();
    assert!(matches!(GroundTruth::from_json(&v.to_string()), Err(TruthError::Json(_))));
}
