//! Whether this process may load eBPF programs: root, or CAP_BPF + CAP_PERFMON in its effective
//! set. Read from `/proc/self/status`.

use std::fs;

const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

pub struct Privilege {
    pub euid: u32,
    effective_caps: u64,
}

impl Privilege {
    pub fn current() -> Self {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        parse(&status).unwrap_or(Self { euid: u32::MAX, effective_caps: 0 })
    }

    pub fn is_root(&self) -> bool {
        self.euid == 0
    }

    pub fn can_load_bpf(&self) -> bool {
        let needed = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        self.is_root() || self.effective_caps & needed == needed
    }
}

fn parse(status: &str) -> Option<Privilege> {
    let field = |name: &str| status.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim);
    let euid = field("Uid")?.split_whitespace().nth(1)?.parse().ok()?;
    let effective_caps = u64::from_str_radix(field("CapEff")?, 16).ok()?;
    Some(Privilege { euid, effective_caps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_effective_uid_and_caps() {
        let user = parse("Name:\tx\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\n").unwrap();
        assert_eq!(user.euid, 1000);
        assert!(!user.can_load_bpf());

        let capable = parse("Uid:\t1000\t1000\t1000\t1000\nCapEff:\t000000c000000000\n").unwrap();
        assert!(capable.can_load_bpf());

        let setuid_root = parse("Uid:\t1000\t0\t0\t0\nCapEff:\t000001ffffffffff\n").unwrap();
        assert!(setuid_root.is_root());
    }
}
