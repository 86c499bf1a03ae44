//! Arbitrary bytes as the kernel's BTF (`--btf FILE`): opening, the struct layout, the generation, the event names
//! and every BTF-derived need of every probe family in the table must give answers or errors, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mmuscope::kernel::{Deny, EventNames, Generation, Kallsyms, KernelBtf, KernelInfo, ResolvedLayout};
use mmuscope::probes::{families, needs, spec};

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = KernelBtf::from_bytes(Path::new("fuzz.btf"), data) else { return };
    let Ok(layout) = ResolvedLayout::resolve(&btf) else { return };
    let generation = Generation::detect(&btf).unwrap_or(Generation::Unknown);
    let events = btf.enum_values("mmu_notifier_event").unwrap_or_default();
    let kernel = KernelInfo {
        release: String::new(),
        btf,
        kallsyms: Kallsyms::default(),
        layout,
        generation,
        events: EventNames::from_pairs(events.into_iter().map(|(n, v)| (v, n)).collect()),
        kprobes: Err("not probed under fuzzing".into()),
        tracefs: Err("not probed under fuzzing".into()),
        deny: Deny::default(),
    };
    let probed = needs::Probed {
        trampolines: Ok(()),
        wide_trampolines: Ok(()),
        reattach: Ok(()),
        keep_attached: false,
        attached: Vec::new(),
        opted_in: Vec::new(),
    };
    for family in families::FAMILIES {
        for alt in family.alternatives() {
            let programs = alt.programs.iter().filter_map(|p| p.when.as_ref());
            for need in alt.needs.iter().chain(programs) {
                // Needs answered by the running system rather than by BTF are left out.
                if matches!(
                    need,
                    spec::Need::Function(_)
                        | spec::Need::Arity(..)
                        | spec::Need::FexitArity(..)
                        | spec::Need::Fields(_)
                        | spec::Need::BtfTracepoint(_)
                ) {
                    let _ = needs::check(need, alt.mode, &kernel, &probed);
                }
            }
            for p in &alt.programs {
                let _ = needs::resolve_function(&kernel, p.target);
            }
        }
    }
});
