//! Names kernel text addresses (subscriber callbacks read from kernel memory) from
//! `/proc/kallsyms`. Only used for the rare addresses a scrape needs, so it scans the file
//! instead of keeping a table; without `CAP_SYSLOG` the file shows zero addresses and the
//! names come out as `unknown`.

use std::collections::BTreeMap;

/// The function symbol at each address (exact match: callbacks are function entry points),
/// without the `[module]` suffix; `unknown` for an address not found.
pub fn names(addrs: &[u64]) -> BTreeMap<u64, String> {
    let mut out: BTreeMap<u64, String> = addrs.iter().map(|a| (*a, "unknown".to_string())).collect();
    if addrs.iter().all(|a| *a == 0) {
        return out;
    }
    if let Ok(text) = std::fs::read_to_string("/proc/kallsyms") {
        resolve(&text, &mut out);
    }
    out
}

fn resolve(kallsyms: &str, out: &mut BTreeMap<u64, String>) {
    for line in kallsyms.lines() {
        let mut f = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else { continue };
        if !matches!(kind, "t" | "T") {
            continue;
        }
        if let Ok(a) = u64::from_str_radix(addr, 16)
            && a != 0
            && let Some(slot) = out.get_mut(&a)
        {
            *slot = name.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_text_symbols_by_exact_address() {
        let text = "ffffffffc0a01230 t amdgpu_hmm_invalidate_gfx\t[amdgpu]\nffffffffc0a01230 d some_data\n\
                    ffffffff81000000 T _stext\n";
        let mut out = BTreeMap::from([(0xffffffffc0a01230, "unknown".into()), (0x1234, "unknown".into())]);
        resolve(text, &mut out);
        assert_eq!(out[&0xffffffffc0a01230], "amdgpu_hmm_invalidate_gfx");
        assert_eq!(out[&0x1234], "unknown");
    }
}
