//! Replaying a [`super::BracketTrace`]'s buffer: brackets by event and secondary-TLB calls by context, in the
//! order the kernel wrote them (the rules at [`super::BracketTrace`]).

use std::collections::BTreeMap;

use mmuscope_tests::truth::TlbContext;

use super::trace::{HMM_BUSY, MIRROR_IMPL, MIRROR_INTERVAL, READ_BEGIN, RXE_INTERVAL};

/// What [`super::BracketTrace::read`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Traced {
    /// Brackets that reach a subscriber, by event name.
    pub brackets: BTreeMap<String, u64>,
    /// Secondary-TLB entry-point calls on subscribed mms, by context.
    pub secondary_calls: BTreeMap<TlbContext, u64>,
    /// Secondary-TLB calls (entry point, or before 6.6 `_end`'s own) that reached an implementer, by context.
    pub secondary_reached: BTreeMap<TlbContext, u64>,
    /// Anything the reference cannot account for (unknown event values, callbacks after no call, unbalanced
    /// windows, lost events, refused probes): each a failure of the reference, not of the agent.
    pub problems: Vec<String>,
    /// Why the test module's callback could not be probed, if so: only its scenarios need it.
    pub mirror_refused: Option<String>,
    /// Why soft-RoCE's ODP callback could not be probed, if so: only `rdma-odp` needs it.
    pub rxe_refused: Option<String>,
    /// `hmm_range_fault` returns of -EBUSY.
    pub hmm_busy: u64,
    /// `mmu_interval_read_begin` calls that found an invalidation of their notifier in flight (they wait).
    pub read_waits: u64,
    /// Why the interval-reader probes (`hmm_busy`, `read_begin`) could not be armed, if so: their counts are then
    /// no reference.
    pub readers_refused: Option<String>,
}

/// One task's open windows while the buffer is replayed.
#[derive(Default)]
struct TaskState {
    /// Each open bracket, innermost last.
    brackets: Vec<OpenBracket>,
    /// An `end` was seen; its return closes the innermost bracket.
    ending: bool,
    /// (tlb, mm) of each open gather window, innermost last.
    gathers: Vec<(u64, u64)>,
    /// The secondary-TLB call an implementer callback would be part of, and whether one already counted it (one
    /// callback per subscriber: several VMs call several).
    call: Option<(TlbContext, bool)>,
}

/// A bracket between its start and the return of its `_end`.
struct OpenBracket {
    mm: u64,
    /// Its event, while it is not counted yet: on an mm with interval notifiers only, it reaches a subscriber only
    /// once an interval callback runs inside it.
    uncounted: Option<String>,
}

/// Replays `trace` (tracefs text, one event per line, time order) into counts; `events` names event values.
pub fn classify(trace: &str, events: &BTreeMap<i64, String>) -> Traced {
    let mut out = Traced::default();
    let mut tasks: BTreeMap<u32, TaskState> = BTreeMap::new();
    for line in trace.lines().filter(|l| !l.starts_with('#')) {
        let Some((pid, name, args)) = parse_line(line) else { continue };
        let task = tasks.entry(pid).or_default();
        let arg = |key: &str| args.get(key).copied();
        match name {
            "start" => {
                task.call = None;
                let event = arg("event").unwrap_or(u64::MAX);
                let mut uncounted = None;
                match i64::try_from(event).ok().and_then(|v| events.get(&v)) {
                    // A classic subscriber is called for every bracket on its mm.
                    Some(e) if arg("list").unwrap_or(0) != 0 => *out.brackets.entry(e.clone()).or_insert(0) += 1,
                    Some(e) => uncounted = Some(e.clone()),
                    None => out.problems.push(format!("a bracket with event value {event}, not in BTF's enum")),
                }
                task.brackets.push(OpenBracket { mm: arg("mm").unwrap_or(0), uncounted });
            }
            "end" => {
                let mm = arg("mm").unwrap_or(0);
                match task.brackets.iter().rposition(|b| b.mm == mm) {
                    Some(_) => task.ending = true,
                    None => out.problems.push(format!("pid {pid}: _end of mm {mm:#x} without its start")),
                }
                // Before 6.6 a plain `_end` calls `->invalidate_range` itself: a call in the bracket.
                task.call = Some((TlbContext::Bracket, false));
            }
            "ended" => {
                task.call = None;
                if std::mem::take(&mut task.ending) {
                    task.brackets.pop();
                }
            }
            "gather" | "gather_fullmm" => {
                task.call = None;
                task.gathers.push((arg("tlb").unwrap_or(0), arg("mm").unwrap_or(0)));
            }
            "finished" => {
                task.call = None;
                task.gathers.pop();
            }
            "sectlb" => {
                let mm = arg("mm").unwrap_or(0);
                let context = if task.brackets.iter().any(|b| b.mm == mm) {
                    TlbContext::Bracket
                } else if task.gathers.iter().any(|&(_, m)| m == mm) {
                    TlbContext::Gather
                } else {
                    TlbContext::Outside
                };
                *out.secondary_calls.entry(context).or_insert(0) += 1;
                task.call = Some((context, false));
            }
            MIRROR_INTERVAL | RXE_INTERVAL => {
                // The interval-tree walk runs inside `_start`: the innermost open bracket is the one it serves.
                if let Some(event) = task.brackets.last_mut().and_then(|b| b.uncounted.take()) {
                    *out.brackets.entry(event).or_insert(0) += 1;
                }
            }
            // The filter keeps -EBUSY only (`ret` is signed: not in `args`).
            HMM_BUSY if line.contains("ret=-16") => out.hmm_busy += 1,
            HMM_BUSY => out.problems.push(format!("pid {pid}: an hmm_busy event without ret=-16: {line}")),
            READ_BEGIN => match (arg("seq"), arg("mmseq")) {
                (Some(seq), Some(current)) => out.read_waits += u64::from(seq == current),
                _ => out.problems.push(format!("pid {pid}: a read_begin event without its sequences: {line}")),
            },
            "impl" | MIRROR_IMPL => match &mut task.call {
                Some((context, counted)) => {
                    if !*counted {
                        *out.secondary_reached.entry(*context).or_insert(0) += 1;
                        *counted = true;
                    }
                }
                None => out.problems.push(format!("pid {pid}: an implementer callback after no secondary-TLB call")),
            },
            _ => {}
        }
    }
    for (pid, task) in tasks {
        if !task.brackets.is_empty() {
            out.problems.push(format!("pid {pid}: {} bracket(s) still open at the end", task.brackets.len()));
        }
    }
    out
}

/// `comm-pid [cpu] flags timestamp: name: (func+0x0/0x..) key=value …` → (pid, name, numeric args).
fn parse_line(line: &str) -> Option<(u32, &str, BTreeMap<&str, u64>)> {
    let cpu = line.find(" [")?;
    let pid = line[..cpu].trim_end().rsplit_once('-')?.1.parse().ok()?;
    let rest = &line[cpu..];
    let (name, args) = rest.split_once(": ")?.1.split_once(':')?;
    let name = name.trim();
    let mut values = BTreeMap::new();
    for kv in args.split_whitespace() {
        if let Some((k, v)) = kv.split_once('=') {
            let v = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            };
            if let Some(v) = v {
                values.insert(k, v);
            }
        }
    }
    Some((pid, name, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 6.1 `madvise(MADV_DONTNEED)` of one page with one VM, as tracefs prints it: a gather opens, the bracket
    /// (CLEAR) opens and closes with `_end`'s own `->invalidate_range`, then `tlb_finish_mmu` flushes through the
    /// entry point. Another task's gather on another mm, in between, changes nothing.
    #[test]
    fn classifies_a_zap_in_order() {
        let events = BTreeMap::from([(0, "unmap".to_owned()), (1, "clear".to_owned())]);
        let trace = "\
# tracer: nop
 mmuscope-worklo-77      [001] .....   10.000001: gather: (tlb_gather_mmu+0x0/0x90) tlb=0xffffc900 mm=0xffff8880
 mmuscope-worklo-77      [001] .....   10.000002: start: (__mmu_notifier_invalidate_range_start+0x0/0x1c0) event=1 mm=0xffff8880 subs=0xffff1 list=0xffff2 itree=0x0
            mmuscope-12  [000] .....   10.000003: gather: (tlb_gather_mmu+0x0/0x90) tlb=0xffffc800 mm=0xffff9990
 mmuscope-worklo-77      [001] .....   10.000004: end: (__mmu_notifier_invalidate_range_end+0x0/0x180) mm=0xffff8880 subs=0xffff1 list=0xffff2 itree=0x0
 mmuscope-worklo-77      [001] .....   10.000005: impl: (kvm_mmu_notifier_invalidate_range+0x0/0x90)
 mmuscope-worklo-77      [001] .....   10.000006: ended: (zap_page_range_single+0xf0/0x190 <- __mmu_notifier_invalidate_range_end)
 mmuscope-worklo-77      [001] .....   10.000007: sectlb: (__mmu_notifier_invalidate_range+0x0/0xa0) mm=0xffff8880 subs=0xffff1 list=0xffff2 itree=0x0
 mmuscope-worklo-77      [001] .....   10.000008: impl: (kvm_mmu_notifier_invalidate_range+0x0/0x90)
 mmuscope-worklo-77      [001] .....   10.000009: impl: (kvm_mmu_notifier_invalidate_range+0x0/0x90)
 mmuscope-worklo-77      [001] .....   10.000010: finished: (zap_page_range_single+0x10f/0x190 <- tlb_finish_mmu)
 mmuscope-worklo-77      [000] .....   10.000011: sectlb: (__mmu_notifier_invalidate_range+0x0/0xa0) mm=0xffff8880 subs=0xffff1 list=0xffff2 itree=0x0
";
        let t = classify(trace, &events);
        assert_eq!(t.problems, Vec::<String>::new());
        assert_eq!(t.brackets, BTreeMap::from([("clear".to_owned(), 1)]));
        use TlbContext::*;
        assert_eq!(t.secondary_calls, BTreeMap::from([(Gather, 1), (Outside, 1)]));
        // The second `impl` of one call (a second VM) counts once; the outside call reached nobody.
        assert_eq!(t.secondary_reached, BTreeMap::from([(Bracket, 1), (Gather, 1)]));

        let t = classify(&trace.replace("event=1", "event=9"), &events);
        assert_eq!(t.problems, vec!["a bracket with event value 9, not in BTF's enum".to_owned()]);
    }

    #[test]
    fn interval_only_brackets_count_when_an_interval_callback_runs_in_them() {
        let events = BTreeMap::from([(0, "unmap".to_owned()), (1, "clear".to_owned())]);
        // Two brackets on an mm with interval notifiers only: the first misses every interval (no callback), the
        // second hits the mirror's (one callback); then the mm's release calls the callback outside any bracket.
        let trace = "\
 mmuscope-worklo-90      [000] .....   20.000001: start: (__mmu_notifier_invalidate_range_start+0x0/0x1c0) event=0 mm=0xffff8880 subs=0xffff1 list=0x0 itree=0xffff3
 mmuscope-worklo-90      [000] .....   20.000002: end: (__mmu_notifier_invalidate_range_end+0x0/0x180) mm=0xffff8880 subs=0xffff1 list=0x0 itree=0xffff3
 mmuscope-worklo-90      [000] .....   20.000003: ended: (zap_page_range_single+0xf0/0x190 <- __mmu_notifier_invalidate_range_end)
 mmuscope-worklo-90      [000] .....   20.000004: start: (__mmu_notifier_invalidate_range_start+0x0/0x1c0) event=1 mm=0xffff8880 subs=0xffff1 list=0x0 itree=0xffff3
 mmuscope-worklo-90      [000] .....   20.000005: interval_mirror: (mirror_invalidate+0x0/0x90 [mmuscope_mirror])
 mmuscope-worklo-90      [000] .....   20.000006: interval_mirror: (mirror_invalidate+0x0/0x90 [mmuscope_mirror])
 mmuscope-worklo-90      [000] .....   20.000007: end: (__mmu_notifier_invalidate_range_end+0x0/0x180) mm=0xffff8880 subs=0xffff1 list=0x0 itree=0xffff3
 mmuscope-worklo-90      [000] .....   20.000008: ended: (zap_page_range_single+0xf0/0x190 <- __mmu_notifier_invalidate_range_end)
 mmuscope-worklo-90      [000] .....   20.000009: interval_mirror: (mirror_invalidate+0x0/0x90 [mmuscope_mirror])
";
        let t = classify(trace, &events);
        assert_eq!(t.problems, Vec::<String>::new());
        assert_eq!(t.brackets, BTreeMap::from([("clear".to_owned(), 1)]));
    }

    #[test]
    fn interval_readers_count_busy_returns_and_equal_sequences() {
        // Two readers: the first finds its notifier's sequence equal to the mm's (an invalidation of it in flight:
        // a wait), the second not; one hmm_range_fault returned -EBUSY (the filter keeps only those).
        let trace = "\
 kworker/u8:2-40      [001] .....   30.000001: read_begin: (mmu_interval_read_begin+0x0/0x120) seq=7 mmseq=7
 kworker/u8:2-40      [001] .....   30.000002: hmm_busy: (ib_umem_odp_map_dma_and_lock+0x1a0/0x3c0 <- hmm_range_fault) ret=-16
 kworker/u8:2-40      [001] .....   30.000003: read_begin: (mmu_interval_read_begin+0x0/0x120) seq=7 mmseq=8
";
        let t = classify(trace, &BTreeMap::new());
        assert_eq!(t.problems, Vec::<String>::new());
        assert_eq!((t.hmm_busy, t.read_waits), (1, 1));
        let t = classify(&trace.replace("ret=-16", "ret=0"), &BTreeMap::new());
        assert_eq!((t.hmm_busy, t.problems.len()), (0, 1));
    }
}
