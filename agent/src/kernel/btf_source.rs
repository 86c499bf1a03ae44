//! How the kernel's BTF is held for the planner: memory-mapped (btf-rs's `Mmap` backend) with a name index of our
//! own, instead of btf-rs's default backend, which caches every type and string of the file in owned structures:
//! ~40 MiB of heap for this host's 5.4 MB vmlinux BTF (measured), the largest item of the agent's start-up peak, for
//! a planner that looks up about a hundred names. Mapped, the BTF costs its own size in pages, plus the index.
//!
//! The mmap backend has no name index: each lookup scans every type (1.5–9 ms here, ~120 lookups at start-up),
//! hence [`NameIndex`].

use std::{
    fs::File,
    hash::{BuildHasher, BuildHasherDefault, DefaultHasher},
    io,
    os::fd::{AsRawFd, FromRawFd},
    path::Path,
};

use btf_rs::{Backend, Btf};

/// The BTF at `path`, memory-mapped. sysfs maps `/sys/kernel/btf/vmlinux` from Linux 6.15 on; before that (and for
/// any file that cannot be mapped) the bytes are copied into a memfd, which can.
pub fn map(path: &Path) -> btf_rs::Result<Btf> {
    match Btf::from_file_with_backend(path, Backend::Mmap) {
        Ok(btf) => Ok(btf),
        // A file that cannot be opened or read fails the same way through the copy, with the error of the read.
        Err(_) => map_copy(path),
    }
}

/// `path`'s bytes copied into a memfd and mapped from there. The mapping keeps the memfd alive after its descriptor
/// is closed.
pub fn map_copy(path: &Path) -> btf_rs::Result<Btf> {
    let mut source = File::open(path)?;
    // SAFETY: the name is a NUL-terminated string; the flags are valid for memfd_create.
    let fd = unsafe { libc::memfd_create(c"mmuscope-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let mut memfd = unsafe { File::from_raw_fd(fd) };
    io::copy(&mut source, &mut memfd)?;
    // btf-rs maps files by path; this one is reachable through our own descriptor table.
    Btf::from_file_with_backend(format!("/proc/self/fd/{}", memfd.as_raw_fd()), Backend::Mmap)
}

/// Named types by a hash of their name, sorted by (hash, id): a lookup is a binary search plus a name check of the
/// few candidates, instead of a scan of every type. 8 bytes per named type (~1 MiB for a kernel).
pub struct NameIndex(Vec<(u32, u32)>);

impl NameIndex {
    /// One pass over every type of `btf`. A type that cannot be read (corrupt file) is left out, so lookups do not
    /// find it, as if absent.
    pub fn build(btf: &Btf) -> Self {
        let (first, last) = btf.base().type_id_range();
        let mut entries = Vec::with_capacity(last.saturating_sub(first) as usize);
        for id in first.max(1)..=last {
            let Ok(t) = btf.resolve_type_by_id(id) else { continue };
            let Some(name) = t.as_btf_type().and_then(|b| btf.resolve_name(b).ok()) else { continue };
            if !name.is_empty() {
                entries.push((hash(&name), id));
            }
        }
        entries.sort_unstable();
        Self(entries)
    }

    /// Ids of the types that may be named `name`, in id order (callers check the name: hashes collide).
    pub fn candidates(&self, name: &str) -> impl Iterator<Item = u32> + '_ {
        let h = hash(name);
        let from = self.0.partition_point(|(k, _)| *k < h);
        self.0[from..].iter().take_while(move |(k, _)| *k == h).map(|(_, id)| *id)
    }
}

/// A fixed hash (SipHash with zero keys): the index is built and searched in one process, but must agree with itself.
fn hash(name: &str) -> u32 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(name) as u32
}
