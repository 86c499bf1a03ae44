//! Cgroup names at creation. The `cgroup_mkdir_tp_btf` program (`agent-ebpf/programs/src/births.rs`) sends the
//! path of every new cgroup through a ring buffer; a task here hands each one to the exporter's cgroup index
//! ([`crate::cgroups::CgroupNames::learn`]), which looks it up while it still exists. The program is attached with the
//! probes (`crate::probes::births`).
//!
//! Without it, a cgroup is named only by the walks of cgroupfs done at scrape time: one that is created, counted and
//! removed between two scrapes — a `systemd-run --scope` job, a short service, a VM that ran for less than the scrape
//! interval — was exported as `cgroup="unknown"` (found on a booted Debian host, see docs/hardening.md).

use mmuscope_abi::{CGROUP_PATH_BYTES, CgroupBirth, names};

use crate::probes::Probes;

/// Starts the task that hands each new cgroup's path to `learn`.
pub fn spawn_reader(
    probes: &mut Probes,
    learn: impl Fn(&str) + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let stopped = "new cgroups are named by cgroupfs walks only";
    crate::ringbuf::spawn_reader(probes, names::CGROUP_BIRTHS, stopped, move |item| {
        if let Some(path) = parse(item) {
            learn(&path);
        }
    })
}

/// The path of one record.
fn parse(bytes: &[u8]) -> Option<String> {
    if bytes.len() < size_of::<CgroupBirth>() {
        return None;
    }
    // SAFETY: `CgroupBirth` is plain old data (`#[repr(C)]`, integers and bytes) and the length is checked.
    let record = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<CgroupBirth>()) };
    let len = (record.len as usize).min(CGROUP_PATH_BYTES);
    let path = std::str::from_utf8(&record.path[..len]).ok()?;
    path.starts_with('/').then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_paths() {
        let mut r = CgroupBirth { len: 0, _pad: 0, path: [0; CGROUP_PATH_BYTES] };
        let p = b"/system.slice/fleet-kvm.scope";
        r.path[..p.len()].copy_from_slice(p);
        r.len = p.len() as u32;
        // SAFETY: plain old data viewed as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts((&r as *const CgroupBirth).cast::<u8>(), size_of::<CgroupBirth>()) };
        assert_eq!(parse(bytes).as_deref(), Some("/system.slice/fleet-kvm.scope"));
        assert_eq!(parse(&bytes[..10]), None, "short record");
        r.len = 0;
        let bytes =
            unsafe { std::slice::from_raw_parts((&r as *const CgroupBirth).cast::<u8>(), size_of::<CgroupBirth>()) };
        assert_eq!(parse(bytes), None, "empty path");
    }
}
