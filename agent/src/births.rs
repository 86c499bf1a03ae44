//! Cgroup names at creation. The `cgroup_mkdir_tp_btf` program (`agent-ebpf/programs/src/births.rs`) sends the
//! path of every new cgroup through a ring buffer; a task here looks each one up while it still exists and adds it
//! to the exporter's cgroup index ([`crate::cgroups::CgroupNames::learn`]).
//!
//! Without it, a cgroup is named only by the walks of cgroupfs done at scrape time: one that is created, counted and
//! removed between two scrapes — a `systemd-run --scope` job, a short service, a VM that ran for less than the scrape
//! interval — was exported as `cgroup="unknown"` (found on a booted Debian host, see docs/hardening.md).

use std::sync::Arc;

use aya::{
    Btf, Ebpf,
    maps::{MapData, RingBuf},
    programs::BtfTracePoint,
};
use mmuscope_abi::{CGROUP_PATH_BYTES, CgroupBirth, names};
use tokio::io::unix::AsyncFd;

use crate::{export::Exporter, kernel::KernelInfo, probes::Probes};

const PROGRAM: &str = "cgroup_mkdir_tp_btf";
const TRACEPOINT: &str = "cgroup_mkdir";
const RUNNING_KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Loads and attaches the program (`tp_btf`, no tracefs and no perf event needed; called while the agent is still
/// privileged, with the kernel's BTF). `Err` says why not.
pub fn attach(ebpf: &mut Ebpf, btf: &Btf, kernel: &KernelInfo) -> Result<(), String> {
    if kernel.deny.tracepoint("cgroup", TRACEPOINT) {
        return Err(format!("{TRACEPOINT} denied by --probes.deny"));
    }
    // tp_btf programs are attached by a BTF type id of the running kernel; ids from another BTF (`--btf`) could
    // name another tracepoint.
    if kernel.btf.path() != std::path::Path::new(RUNNING_KERNEL_BTF) {
        return Err(format!("--btf {} is not the running kernel's {RUNNING_KERNEL_BTF}", kernel.btf.path().display()));
    }
    let prog = ebpf.program_mut(PROGRAM).ok_or(format!("program {PROGRAM} missing"))?;
    let p: &mut BtfTracePoint = prog.try_into().map_err(|e: aya::programs::ProgramError| e.to_string())?;
    p.load(TRACEPOINT, btf).map_err(|e| chain(&e))?;
    p.attach().map_err(|e| chain(&e))?;
    Ok(())
}

/// Starts the task that feeds new cgroups' paths to `exporter`.
pub fn spawn_reader(probes: &mut Probes, exporter: Arc<Exporter>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let ring: RingBuf<MapData> = probes.take_map(names::CGROUP_BIRTHS)?.try_into()?;
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd owns the ring buffer, and `as_raw_fd`
    // always returns that same fd.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }?;
    Ok(tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!("cgroup-birth ring buffer: {e}; new cgroups are named by cgroupfs walks only");
                    return;
                }
            };
            while let Some(item) = guard.get_inner_mut().next() {
                if let Some(path) = parse(&item) {
                    exporter.learn_cgroup(&path);
                }
            }
            guard.clear_ready();
        }
    }))
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

fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg.lines().next().unwrap_or_default().to_string()
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
