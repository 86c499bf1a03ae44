//! A minimal reader of the running kernel's BTF for the reference (`reference`): struct member offsets and enum
//! values, nothing else. It is the tests' own, so the reference's offsets do not come from the agent's BTF code
//! (`mmuscope::kernel`) it checks; a wrong layout in one does not hide in the other. Format: the kernel's
//! Documentation/bpf/btf.rst (header, then `struct btf_type` records each followed by kind-specific data, then the
//! string table).

use anyhow::{Context, Result, bail, ensure};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
const MAGIC: u16 = 0xeb9f;

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_ENUM64: u32 = 19;

/// One type record: where its kind-specific data starts, and its header fields.
#[derive(Clone, Copy)]
struct Type {
    name_off: u32,
    info: u32,
    /// `size` or `type`, by kind.
    size_type: u32,
    /// Offset of the kind-specific data in `Btf::data`.
    extra: usize,
}

impl Type {
    fn kind(self) -> u32 {
        (self.info >> 24) & 0x1f
    }
    fn vlen(self) -> usize {
        (self.info & 0xffff) as usize
    }
    fn kind_flag(self) -> bool {
        self.info >> 31 == 1
    }
}

pub struct Btf {
    data: Vec<u8>,
    strings: std::ops::Range<usize>,
    /// Type id N is `types[N - 1]` (id 0 is `void`).
    types: Vec<Type>,
}

impl Btf {
    pub fn open_vmlinux() -> Result<Self> {
        let data = std::fs::read(VMLINUX_BTF).with_context(|| format!("reading {VMLINUX_BTF}"))?;
        Self::parse(data).with_context(|| format!("parsing {VMLINUX_BTF}"))
    }

    pub fn parse(data: Vec<u8>) -> Result<Self> {
        ensure!(data.len() >= 24, "{} bytes is too short for a BTF header", data.len());
        let magic = u16::from_ne_bytes([data[0], data[1]]);
        ensure!(magic == MAGIC, "not BTF (magic {magic:#06x})");
        let u32_at = |off: usize| u32::from_ne_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
        let (hdr, type_off, type_len, str_off, str_len) = (u32_at(4), u32_at(8), u32_at(12), u32_at(16), u32_at(20));
        let types_at = hdr + type_off;
        let types_end = types_at + type_len;
        let strings = hdr + str_off..hdr + str_off + str_len;
        ensure!(types_end <= data.len() && strings.end <= data.len(), "sections outside the {} bytes", data.len());
        let mut types = Vec::new();
        let mut at = types_at;
        while at < types_end {
            ensure!(at + 12 <= types_end, "type record at {at} is cut off");
            let t = Type {
                name_off: u32_at(at) as u32,
                info: u32_at(at + 4) as u32,
                size_type: u32_at(at + 8) as u32,
                extra: at + 12,
            };
            let extra = match t.kind() {
                1 => 4,                                      // INT
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0, // PTR FWD TYPEDEF VOLATILE CONST RESTRICT FUNC FLOAT TYPE_TAG
                3 => 12,                                     // ARRAY
                KIND_STRUCT | KIND_UNION => 12 * t.vlen(),
                KIND_ENUM => 8 * t.vlen(),
                13 => 8 * t.vlen(),  // FUNC_PROTO
                14 => 4,             // VAR
                15 => 12 * t.vlen(), // DATASEC
                17 => 4,             // DECL_TAG
                KIND_ENUM64 => 12 * t.vlen(),
                k => bail!("type {} has unknown kind {k}", types.len() + 1),
            };
            types.push(t);
            at = t.extra + extra;
        }
        Ok(Self { data, strings, types })
    }

    fn u32_at(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.data[off..off + 4].try_into().expect("4 bytes"))
    }

    fn name(&self, off: u32) -> &str {
        let s = &self.data[self.strings.clone()];
        let tail = s.get(off as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or_default()
    }

    fn named(&self, name: &str, kinds: &[u32]) -> Option<Type> {
        self.types.iter().copied().find(|t| kinds.contains(&t.kind()) && t.vlen() > 0 && self.name(t.name_off) == name)
    }

    /// Byte offset of `path` (member names, outermost first) in `struct name`, looking through anonymous struct and
    /// union members as C does.
    pub fn offset(&self, name: &str, path: &[&str]) -> Result<u32> {
        let mut t = self.named(name, &[KIND_STRUCT]).with_context(|| format!("BTF has no struct {name}"))?;
        let mut total = 0;
        for (i, member) in path.iter().enumerate() {
            let (off, ty) = self
                .member(t, member)
                .with_context(|| format!("BTF: struct {name} has no member {}", path[..=i].join(".")))?;
            total += off;
            if i + 1 < path.len() {
                t = self.resolve(ty).with_context(|| format!("BTF: {name}.{member} is not a struct"))?;
            }
        }
        Ok(total)
    }

    /// Whether `struct name` has member `member` (looking through anonymous members); an error if BTF has no such
    /// struct.
    pub fn has_member(&self, name: &str, member: &str) -> Result<bool> {
        let t = self.named(name, &[KIND_STRUCT]).with_context(|| format!("BTF has no struct {name}"))?;
        Ok(self.member(t, member).is_some())
    }

    /// A member's byte offset and type id in struct/union `t`, searching anonymous members recursively.
    fn member(&self, t: Type, want: &str) -> Option<(u32, u32)> {
        for i in 0..t.vlen() {
            let at = t.extra + 12 * i;
            let (name_off, ty, raw) = (self.u32_at(at), self.u32_at(at + 4), self.u32_at(at + 8));
            // With kind_flag set the low 24 bits are the bit offset (the high 8 a bitfield size).
            let bits = if t.kind_flag() { raw & 0x00ff_ffff } else { raw };
            let name = self.name(name_off);
            if name == want {
                return (bits % 8 == 0).then_some((bits / 8, ty));
            }
            if name.is_empty()
                && let Some(inner) = self.resolve(ty)
                && let Some((off, ty)) = self.member(inner, want)
            {
                return Some((bits / 8 + off, ty));
            }
        }
        None
    }

    /// The struct or union a type id names, through typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<Type> {
        for _ in 0..16 {
            let t = *self.types.get((id as usize).checked_sub(1)?)?;
            match t.kind() {
                KIND_STRUCT | KIND_UNION => return Some(t),
                8..=11 | 18 => id = t.size_type,
                _ => return None,
            }
        }
        None
    }

    /// The enumerators of `enum name`: (name, value).
    pub fn enum_values(&self, name: &str) -> Result<Vec<(String, i64)>> {
        let t = self.named(name, &[KIND_ENUM, KIND_ENUM64]).with_context(|| format!("BTF has no enum {name}"))?;
        let step = if t.kind() == KIND_ENUM { 8 } else { 12 };
        Ok((0..t.vlen())
            .map(|i| {
                let at = t.extra + step * i;
                let value = if t.kind() == KIND_ENUM {
                    i64::from(self.u32_at(at + 4) as i32)
                } else {
                    (u64::from(self.u32_at(at + 8)) << 32 | u64::from(self.u32_at(at + 4))) as i64
                };
                (self.name(self.u32_at(at)).to_owned(), value)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's own BTF: the offsets the reference needs exist and are plausible (inside the struct).
    #[test]
    fn reads_the_running_kernels_layout() {
        let Ok(btf) = Btf::open_vmlinux() else {
            assert!(!mmuscope_tests::harness::prereq::in_ci(), "{VMLINUX_BTF} missing in CI");
            eprintln!("SKIPPED: no {VMLINUX_BTF}");
            return;
        };
        let event = btf.offset("mmu_notifier_range", &["event"]).unwrap();
        let mm = btf.offset("mmu_notifier_range", &["mm"]).unwrap();
        assert_ne!(event, mm);
        // `notifier_subscriptions` sits in mm_struct's anonymous struct: found through it.
        btf.offset("mm_struct", &["notifier_subscriptions"]).unwrap();
        assert_eq!(btf.offset("mmu_notifier_subscriptions", &["list", "first"]).unwrap(), 0);
        let events = btf.enum_values("mmu_notifier_event").unwrap();
        assert!(events.iter().any(|(n, v)| n == "MMU_NOTIFY_UNMAP" && *v == 0), "{events:?}");
        assert!(btf.offset("mmu_notifier_range", &["no_such_member"]).is_err());
        assert!(btf.has_member("mmu_notifier_ops", "invalidate_range_start").unwrap());
        assert!(!btf.has_member("mmu_notifier_ops", "no_such_member").unwrap());
    }
}
