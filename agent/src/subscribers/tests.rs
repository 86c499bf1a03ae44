use std::collections::HashSet;

use mmuscope_abi::{SubscriberRecord, callback_slot, record_kind};

use super::{
    classify,
    records::ParseError,
    symbols::{Found, Symbol, lookup},
    *,
};

fn sym(name: &str, module: Option<&str>) -> Symbol {
    Symbol { name: name.into(), module: module.map(Into::into) }
}

#[test]
fn subscriber_kind_comes_from_known_prefixes_then_the_module() {
    assert_eq!(classify(Some(&sym("kvm_mmu_notifier_invalidate_range_start", None))), "kvm");
    assert_eq!(classify(Some(&sym("kvm_mmu_notifier_release", Some("kvm")))), "kvm");
    assert_eq!(classify(Some(&sym("intel_arch_invalidate_secondary_tlbs", None))), "intel_iommu_sva");
    assert_eq!(classify(Some(&sym("amdgpu_hmm_invalidate_gfx", Some("amdgpu")))), "amdgpu");
    assert_eq!(classify(Some(&sym("some_callback", Some("mydriver")))), "mydriver");
    assert_eq!(classify(Some(&sym("some_builtin_callback", None))), "unknown");
    assert_eq!(classify(None), "unknown");
}

#[test]
fn kallsyms_lookup_names_exact_text_addresses_with_their_module() {
    let text = "ffffffff81000000 T _stext\n\
                ffffffff81200000 t kvm_mmu_notifier_invalidate_range_start\n\
                ffffffff81300000 D kvm_mmu_notifier_ops\n\
                ffffffffc0001000 t mn_invalidate_range\t[amd_iommu_v2]\n\
                ffffffffc0002000 t mn_release\t[amd_iommu_v2]\n\
                ffffffffc0002100 d mn_ops\t[amd_iommu_v2]\n\
                ffffffffc0009000 t other_function\t[other]\n\
                0000000000000000 t hidden_when_unprivileged\n";
    let wanted: HashSet<u64> = [0xffffffff81200000, 0xffffffff81300000, 0xffffffffc0001000, 0xffffffff81200001].into();
    let found = lookup(text.as_bytes(), &wanted).unwrap();
    let named = &found.named;
    assert_eq!(named[&0xffffffff81200000], sym("kvm_mmu_notifier_invalidate_range_start", None));
    assert_eq!(named[&0xffffffffc0001000], sym("mn_invalidate_range", Some("amd_iommu_v2")));
    assert_eq!(named.len(), 2, "data symbols and inexact addresses are not callbacks: {named:?}");
    // The wanted module's other text symbols come along (not vmlinux's, not another module's, not data).
    let mates: Vec<u64> = found.mates.iter().map(|(a, _)| *a).collect();
    assert_eq!(mates, [0xffffffffc0001000, 0xffffffffc0002000]);
    assert_eq!(found.mates[1].1, sym("mn_release", Some("amd_iommu_v2")));
}

fn bytes(records: &[SubscriberRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        // SAFETY: a repr(C) record without padding holes read as bytes.
        out.extend_from_slice(unsafe {
            std::slice::from_raw_parts((r as *const SubscriberRecord).cast::<u8>(), size_of::<SubscriberRecord>())
        });
    }
    out
}

fn mm(tgid: u32, mm: u64, notifiers: u32) -> SubscriberRecord {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"qemu");
    SubscriberRecord { kind: record_kind::MM, tgid, mm, notifiers, comm, cgroup_id: 7, ..Default::default() }
}

fn notifier(mm: u64, start: u64) -> SubscriberRecord {
    SubscriberRecord {
        kind: record_kind::NOTIFIER,
        mm,
        ops: 0x1000,
        callbacks: [0x10, start, 0x30, 0, 0],
        ..Default::default()
    }
}

#[test]
fn records_group_by_mm_and_duplicate_mms_are_kept_once() {
    let stream = bytes(&[
        mm(10, 0xa, 2),
        notifier(0xa, 0x20),
        notifier(0xa, 0x20),
        mm(11, 0xa, 2), // vfork child sharing the mm: skipped with its notifiers
        notifier(0xa, 0x20),
        mm(12, 0xb, 0),
        interval(0xb, 0x40, 0x1000),
        interval(0xb, 0x40, 0x3000),
        interval(0xb, 0x48, 0x5000),
        SubscriberRecord { kind: record_kind::ITREE_TRUNCATED, mm: 0xb, notifiers: 3, ..Default::default() },
        mm(13, 0xc, 0),
        interval(0xc, 0x40, 0x1000),
    ]);
    let raw = parse(&stream).unwrap();
    assert_eq!(raw.len(), 3);
    assert_eq!(raw[0].mm.tgid, 10);
    assert_eq!(raw[0].notifiers.len(), 2);
    assert!(raw[0].intervals.is_empty() && !raw[0].intervals_truncated);
    let starts: Vec<u64> = raw[1].intervals.iter().map(|i| i.start).collect();
    assert_eq!(starts, [0x1000, 0x3000, 0x5000], "every interval notifier, in the program's (address) order");
    assert_eq!(raw[1].intervals[2].callbacks[0], 0x48);
    assert!(raw[1].intervals_truncated, "the truncation record marks its mm");
    assert_eq!((raw[2].intervals.len(), raw[2].intervals_truncated), (1, false));
    assert_eq!(records::comm(&raw[0].mm.comm), "qemu");
}

fn interval(mm: u64, invalidate: u64, start: u64) -> SubscriberRecord {
    SubscriberRecord {
        kind: record_kind::INTERVAL,
        mm,
        ops: 0x2000,
        callbacks: [invalidate, 0, 0, 0, 0],
        start,
        last: start + 0xfff,
        ..Default::default()
    }
}

#[test]
fn malformed_streams_are_errors() {
    let mut stream = bytes(&[mm(1, 0xa, 0)]);
    stream.pop();
    assert!(matches!(parse(&stream), Err(ParseError::Length(..))));
    assert_eq!(parse(&bytes(&[notifier(0xa, 0x20)])), Err(ParseError::Orphan(0, record_kind::NOTIFIER)));
    assert_eq!(parse(&bytes(&[mm(1, 0xa, 1), notifier(0xb, 0x20)])), Err(ParseError::Orphan(1, record_kind::NOTIFIER)));
}

#[test]
fn subscriptions_are_named_and_classified_from_their_first_callback() {
    let mut symbols = Symbols::default();
    symbols.insert_for_test(0x20, sym("kvm_mmu_notifier_invalidate_range_start", None));
    symbols.insert_for_test(0x30, sym("kvm_mmu_notifier_invalidate_range_end", None));
    symbols.insert_for_test(0x60, sym("mirror_invalidate", Some("mmuscope_mirror")));
    let raw = parse(&bytes(&[
        mm(10, 0xa, 1),
        notifier(0xa, 0x20),
        mm(12, 0xb, 0),
        interval(0xb, 0x40, 0x1000),
        interval(0xb, 0x60, 0x3000),
    ]))
    .unwrap();
    let built = build(&raw, &symbols, "arch_invalidate_secondary_tlbs");
    let kvm = &built[0].subscriptions[0];
    assert_eq!(kvm.kind, "kvm");
    let slots: Vec<&str> = kvm.callbacks.iter().map(|c| c.slot).collect();
    assert_eq!(slots, ["invalidate_range_start", "invalidate_range_end", "release"], "NULL slots are left out");
    assert_eq!(kvm.callbacks[0].symbol.as_deref(), Some("kvm_mmu_notifier_invalidate_range_start"));
    assert_eq!(kvm.callbacks[2].symbol, None);
    let interval = &built[1].subscriptions[0];
    assert_eq!(interval.interval, Some((0x1000, 0x1fff)));
    assert_eq!(interval.kind, "interval", "an unnamed interval callback counts as `interval`");
    let slots: Vec<&str> = interval.callbacks.iter().map(|c| c.slot).collect();
    assert_eq!(slots, ["invalidate"]);
    // Each interval notifier is a subscription of its own, named from its own callback.
    let mirror = &built[1].subscriptions[1];
    assert_eq!((mirror.kind.as_str(), mirror.interval), ("mmuscope_mirror", Some((0x3000, 0x3fff))));
    assert!(!built[1].intervals_truncated);
    // A kernel with the change_pte op: the subscriber that implements it lists it.
    let mut with_change_pte = notifier(0xa, 0x20);
    with_change_pte.callbacks[callback_slot::CHANGE_PTE] = 0x50;
    symbols.insert_for_test(0x50, sym("kvm_mmu_notifier_change_pte", None));
    let raw = parse(&bytes(&[mm(10, 0xa, 1), with_change_pte])).unwrap();
    let built = build(&raw, &symbols, "invalidate_range");
    let slots: Vec<&str> = built[0].subscriptions[0].callbacks.iter().map(|c| c.slot).collect();
    assert_eq!(slots, ["invalidate_range_start", "invalidate_range_end", "release", "change_pte"]);
    assert_eq!(built[0].subscriptions[0].callbacks[3].symbol.as_deref(), Some("kvm_mmu_notifier_change_pte"));
}

#[test]
fn callback_addresses_match_the_probed_function_start_or_just_past_its_endbr() {
    use super::callbacks::{Target, target_of};
    let t = |address: u64, callback: &'static str| Target {
        address,
        symbol: format!("f{address:x}"),
        subscriber: "kvm".into(),
        callback,
    };
    let targets = [t(0x1000, "invalidate_range_start"), t(0x2000, "invalidate_range_end")];
    assert_eq!(target_of(&targets, 0x1000).unwrap().callback, "invalidate_range_start");
    assert_eq!(target_of(&targets, 0x1004).unwrap().callback, "invalidate_range_start", "past endbr64");
    assert_eq!(target_of(&targets, 0x2000).unwrap().callback, "invalidate_range_end");
    assert!(target_of(&targets, 0x0fff).is_none());
    assert!(target_of(&targets, 0x1010).is_none());
}

#[test]
fn a_new_callback_is_named_off_the_request_path() {
    use std::{
        sync::mpsc,
        time::{Duration, Instant},
    };
    // A kallsyms read that lasts until the test releases it (an emulated guest takes over ten seconds).
    let (release, released) = mpsc::channel::<()>();
    let mut symbols = Symbols::with_source_for_test(move |wanted: &HashSet<u64>| {
        released.recv().unwrap();
        let named =
            wanted.iter().filter(|a| **a == 0x40).map(|a| (*a, sym("dmirror_invalidate", Some("mmuscope_mirror"))));
        // The module's other callback comes with it: a later request for it needs no read.
        let mates = vec![(0x60, sym("mirror_tlb_invalidate", Some("mmuscope_mirror")))];
        Found { named: named.collect(), mates }
    });
    let before = symbols.answered();
    let asked = Instant::now();
    symbols.request([0x40, 0x50]);
    assert!(asked.elapsed() < Duration::from_secs(1), "request waited for the read");
    assert!(symbols.pending(0x40) && symbols.get(0x40).is_none(), "no name until the reader answers");
    symbols.request([0x40]); // already queued: not read twice
    release.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while symbols.answered() == before {
        assert!(Instant::now() < deadline, "the reader never answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(symbols.get(0x40), Some(sym("dmirror_invalidate", Some("mmuscope_mirror"))));
    assert!(!symbols.pending(0x40) && !symbols.pending(0x50));
    assert_eq!(symbols.get(0x50), None, "no symbol is an answer too");
    assert_eq!(symbols.answered(), before + 1, "one read for both addresses");
    symbols.request([0x60]);
    assert!(!symbols.pending(0x60), "a module mate is answered without a read");
    assert_eq!(symbols.get(0x60).map(|s| s.name), Some("mirror_tlb_invalidate".to_string()));
}

#[test]
fn start_up_names_come_from_the_start_up_copy_not_kallsyms() {
    // Names no kernel has: they can only come from the copy, whatever this machine's kallsyms shows.
    let copy = "ffffffffc0a01000 t mmuscope_test_cb_invalidate_range_start\t[mmuscope_test]\n\
                ffffffffc0a02000 t mmuscope_test_cb_release\t[mmuscope_test]\n\
                ffffffff8a000000 T kvm_mmuscope_test_only_callback\n";
    let path = std::env::temp_dir().join(format!("mmuscope-start-up-copy-{}", std::process::id()));
    std::fs::write(&path, copy).unwrap();
    let mut symbols = Symbols::open(Some(std::fs::File::open(&path).unwrap()));
    std::fs::remove_file(&path).unwrap();
    symbols.preload(&["kvm_"]);
    assert_eq!(symbols.address_of("kvm_mmuscope_test_only_callback"), Some(0xffffffff8a000000));
    symbols.resolve_now([0xffffffffc0a01000]);
    assert_eq!(
        symbols.get(0xffffffffc0a01000),
        Some(sym("mmuscope_test_cb_invalidate_range_start", Some("mmuscope_test")))
    );
    // Its module mate came with it, without another read.
    assert_eq!(symbols.get(0xffffffffc0a02000), Some(sym("mmuscope_test_cb_release", Some("mmuscope_test"))));
    symbols.started();
    // After start-up the copy is gone: an address it holds is not looked up there any more (kallsyms has no such
    // symbol, so it stays unnamed).
    symbols.resolve_now([0xffffffff8a000000 + 0x10]);
    assert_eq!(symbols.get(0xffffffff8a000010), None);
}
