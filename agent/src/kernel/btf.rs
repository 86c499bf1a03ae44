//! Queries against the running kernel's BTF (`/sys/kernel/btf/vmlinux` or `--btf PATH`):
//! struct member offsets (through anonymous members), enum values and function prototypes.

use std::path::{Path, PathBuf};

use btf_rs::{Btf, BtfType, Type};

use super::{btf_source::NameIndex, deny::Deny};

/// Errors of BTF look-ups. A missing item is an ordinary answer (`Ok(None)`), not an error.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    // The source is printed by the error chain (`{:#}`), so not repeated here.
    #[error("cannot read BTF from {path}")]
    Open { path: PathBuf, source: btf_rs::Error },
    #[error("malformed BTF while resolving {what}: {source}")]
    Malformed { what: String, source: btf_rs::Error },
    /// A chain of typedefs/qualifiers or anonymous members longer than any real kernel's (a cycle in a corrupt file).
    #[error("malformed BTF while resolving {what}: type chain deeper than {MAX_DEPTH}")]
    TooDeep { what: String },
}

/// Typedef/qualifier hops and nested anonymous members followed before a BTF is called corrupt. Real kernels need a
/// handful; a cycle in a corrupt file would otherwise loop or overflow the stack (found by the `btf_plan` fuzzer).
const MAX_DEPTH: usize = 64;

/// A member found in a struct: byte offset from the struct's start and its size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// A function prototype: parameter names (empty for unnamed) in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prototype {
    pub params: Vec<String>,
}

/// The kernel's type information.
pub struct KernelBtf {
    btf: Btf,
    names: NameIndex,
    path: PathBuf,
    /// Names the planner must not see (`--probes.deny`).
    hidden: Deny,
}

impl KernelBtf {
    pub const DEFAULT_PATH: &'static str = "/sys/kernel/btf/vmlinux";

    /// Maps the file (see [`super::btf_source`] for why not parse it) and indexes its names.
    pub fn open(path: &Path) -> Result<Self, BtfError> {
        let btf = super::btf_source::map(path).map_err(|source| BtfError::Open { path: path.into(), source })?;
        Ok(Self::indexed(btf, path))
    }

    /// BTF from memory (`path` only names it in messages); used by the fuzz targets (agent/fuzz) and tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, BtfError> {
        let btf = Btf::from_bytes(bytes).map_err(|source| BtfError::Open { path: path.into(), source })?;
        Ok(Self::indexed(btf, path))
    }

    fn indexed(btf: Btf, path: &Path) -> Self {
        Self { names: NameIndex::build(&btf), btf, path: path.into(), hidden: Deny::default() }
    }

    /// The same BTF without the names in `deny` (as a kernel that lacks them would look).
    pub fn hiding(mut self, deny: Deny) -> Self {
        self.hidden = deny;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn malformed(what: &str) -> impl FnOnce(btf_rs::Error) -> BtfError + '_ {
        move |source| BtfError::Malformed { what: what.to_string(), source }
    }

    /// All types with `name` (a name can be shared, e.g. a struct and a function).
    fn types(&self, name: &str) -> Vec<Type> {
        let named = |t: &Type| t.as_btf_type().and_then(|b| self.btf.resolve_name(b).ok()).is_some_and(|n| n == name);
        let candidates = self.names.candidates(name).filter_map(|id| self.btf.resolve_type_by_id(id).ok());
        candidates.filter(named).collect()
    }

    /// The struct named `name`, if BTF has a complete definition of it.
    fn find_struct(&self, name: &str) -> Option<btf_rs::Struct> {
        self.types(name).into_iter().find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() || s.size() > 0 => Some(s),
            _ => None,
        })
    }

    /// Byte offset and size of `member` in `struct name`; `member` may be a dotted path
    /// (`"flags.__mm_flags"`). Anonymous struct/union members are searched transparently, as C
    /// does. `Ok(None)` when the struct or a member does not exist.
    pub fn member(&self, name: &str, member: &str) -> Result<Option<Field>, BtfError> {
        if self.hidden.member(name, member) {
            return Ok(None);
        }
        let Some(mut current) = self.find_struct(name) else { return Ok(None) };
        let mut base = 0u32;
        let mut parts = member.split('.').peekable();
        while let Some(part) = parts.next() {
            let Some((offset_bits, type_id)) = self.find_member(&current, part, 0)? else {
                return Ok(None);
            };
            if offset_bits % 8 != 0 {
                return Ok(None); // bitfields are not addressable; callers need whole bytes
            }
            base += offset_bits / 8;
            let resolved = self.strip(type_id, name)?;
            if parts.peek().is_none() {
                let size = self.size_of(&resolved, name)?;
                return Ok(Some(Field { offset: base, size }));
            }
            current = match resolved {
                Type::Struct(s) | Type::Union(s) => s,
                _ => return Ok(None),
            };
        }
        Ok(None)
    }

    /// Finds `name` among `s`'s members, descending into anonymous members; returns the bit
    /// offset from `s`'s start and the member's type id.
    fn find_member(&self, s: &btf_rs::Struct, name: &str, depth: usize) -> Result<Option<(u32, u32)>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { what: name.to_string() });
        }
        for m in &s.members {
            let mname = self.btf.resolve_name(m).unwrap_or_default();
            let type_id = m.get_type_id().unwrap_or(0);
            if mname == name {
                return Ok(Some((m.bit_offset(), type_id)));
            }
            if mname.is_empty()
                && let Type::Struct(inner) | Type::Union(inner) = self.strip(type_id, name)?
                && let Some((off, id)) = self.find_member(&inner, name, depth + 1)?
            {
                return Ok(Some((m.bit_offset() + off, id)));
            }
        }
        Ok(None)
    }

    /// Resolves typedefs and qualifiers down to the underlying type.
    fn strip(&self, mut id: u32, what: &str) -> Result<Type, BtfError> {
        for _ in 0..MAX_DEPTH {
            let t = self.btf.resolve_type_by_id(id).map_err(Self::malformed(what))?;
            match &t {
                Type::Typedef(_) | Type::Volatile(_) | Type::Const(_) | Type::Restrict(_) | Type::TypeTag(_) => {
                    id = t.as_btf_type().and_then(|b| b.get_type_id()).unwrap_or(0);
                }
                _ => return Ok(t),
            }
        }
        Err(BtfError::TooDeep { what: what.to_string() })
    }

    fn size_of(&self, t: &Type, what: &str) -> Result<u32, BtfError> {
        self.size_at(t, what, 0)
    }

    fn size_at(&self, t: &Type, what: &str, depth: usize) -> Result<u32, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { what: what.to_string() });
        }
        Ok(match t {
            Type::Int(i) => i.size() as u32,
            Type::Ptr(_) => 8,
            Type::Enum(e) => e.size() as u32,
            Type::Enum64(e) => e.size() as u32,
            Type::Struct(s) | Type::Union(s) => s.size() as u32,
            Type::Float(f) => f.size() as u32,
            Type::Array(a) => {
                let elem = self.strip(a.get_type_id().unwrap_or(0), what)?;
                self.size_at(&elem, what, depth + 1)?.saturating_mul(a.len() as u32)
            }
            _ => 0,
        })
    }

    /// Values of the named enumerators, wherever they are declared (many kernel constants live
    /// in anonymous enums, e.g. `___GFP_*_BIT`). One pass over all types; absent names are
    /// missing from the result.
    pub fn enumerators(&self, names: &[&str]) -> std::collections::HashMap<String, u64> {
        let mut found = std::collections::HashMap::new();
        let mut types = self.btf.type_iter();
        // A malformed type ends the scan; what was found so far is still valid.
        while let Ok(Some(t)) = fallible_iterator::FallibleIterator::next(&mut types) {
            let members: Vec<(String, u64)> = match &t {
                Type::Enum(e) => {
                    e.members.iter().map(|m| (self.btf.resolve_name(m).unwrap_or_default(), m.val() as u64)).collect()
                }
                Type::Enum64(e) => {
                    e.members.iter().map(|m| (self.btf.resolve_name(m).unwrap_or_default(), m.val())).collect()
                }
                _ => continue,
            };
            for (n, v) in members {
                if names.contains(&n.as_str()) && !self.hidden.enumerator(&n) {
                    found.insert(n, v);
                }
            }
            if found.len() == names.len() {
                break;
            }
        }
        found
    }

    /// Value of enumerator `name` of `enum enum_name`. `Ok(None)` when absent.
    pub fn enum_value(&self, enum_name: &str, name: &str) -> Result<Option<u64>, BtfError> {
        if self.hidden.enumerator(name) {
            return Ok(None);
        }
        Ok(self.enum_values(enum_name)?.into_iter().find(|(n, _)| n == name).map(|(_, v)| v))
    }

    /// All enumerators of `enum enum_name` in declaration order.
    pub fn enum_values(&self, enum_name: &str) -> Result<Vec<(String, u64)>, BtfError> {
        for t in self.types(enum_name) {
            match t {
                Type::Enum(e) => {
                    return e
                        .members
                        .iter()
                        .map(|m| Ok((self.btf.resolve_name(m).map_err(Self::malformed(enum_name))?, m.val() as u64)))
                        .collect();
                }
                Type::Enum64(e) => {
                    return e
                        .members
                        .iter()
                        .map(|m| Ok((self.btf.resolve_name(m).map_err(Self::malformed(enum_name))?, m.val())))
                        .collect();
                }
                _ => {}
            }
        }
        Ok(Vec::new())
    }

    /// Prototype of the kernel function `name`, `None` if BTF has no such FUNC.
    pub fn function(&self, name: &str) -> Result<Option<Prototype>, BtfError> {
        if self.hidden.function(name) {
            return Ok(None);
        }
        for t in self.types(name) {
            if let Type::Func(f) = t {
                let proto = self.btf.resolve_chained_type(&f).map_err(Self::malformed(name))?;
                let Type::FuncProto(p) = proto else { continue };
                let params =
                    p.parameters.iter().map(|param| self.btf.resolve_name(param).unwrap_or_default()).collect();
                return Ok(Some(Prototype { params }));
            }
        }
        Ok(None)
    }

    /// Whether BTF has a type (of any kind) named `name`, e.g. `btf_trace_kvm_unmap_hva_range`.
    pub fn has_type(&self, name: &str) -> bool {
        !self.hidden.type_name(name) && !self.types(name).is_empty()
    }
}
