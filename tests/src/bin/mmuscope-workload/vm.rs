//! The KVM VM fixture, on raw ioctls (three of them; no vCPU is ever created or run).
//!
//! `KVM_CREATE_VM` registers KVM's mmu_notifier on the calling process's mm: from then on every invalidation bracket
//! of this mm calls `kvm_mmu_notifier_invalidate_range_start`, which emits `kvm:kvm_unmap_hva_range` once per VM.
//! Closing the VM fd destroys the VM (no vCPUs, irqfds or devices hold references). In `kvm_destroy_vm` (6.18):
//! `kvm_arch_pre_destroy_vm` (stops workers, no mm change) → `mmu_notifier_unregister` (calls `->release`, which
//! emits no `kvm_unmap_hva_range`) → `kvm_arch_destroy_vm`, whose x86 `vm_munmap` of private memslots (APIC access,
//! TSS, identity map; only created with vCPUs) would come after the notifier is gone anyway. So destroying the VM
//! adds no bracket; bpftrace confirms it on this host, and fentry/kprobe counts in 6.1 and 6.12 guests agree.
//!
//! After the VM is gone the mm keeps its (now empty) `notifier_subscriptions`, which is only freed with the mm:
//! every later bracket (the guest memory's munmap, Rust's exit-time munmaps, `exit_mmap`) still enters
//! `__mmu_notifier_invalidate_range_start` but reaches no subscriber. Those are outside every truth.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use anyhow::{Context, Result, bail};

use crate::region::AnonRegion;

// <linux/kvm.h>: _IO(KVMIO, nr) and _IOW(KVMIO, nr, T) with KVMIO = 0xAE.
const KVMIO: u64 = 0xAE;
const fn io(nr: u64) -> u64 {
    (KVMIO << 8) | nr
}
const fn iow<T>(nr: u64) -> u64 {
    const IOC_WRITE: u64 = 1;
    (IOC_WRITE << 30) | ((size_of::<T>() as u64) << 16) | (KVMIO << 8) | nr
}
const KVM_GET_API_VERSION: u64 = io(0x00);
const KVM_CREATE_VM: u64 = io(0x01);
const KVM_SET_USER_MEMORY_REGION: u64 = iow::<KvmUserspaceMemoryRegion>(0x46);
/// The only API version there has ever been.
const KVM_API_VERSION: libc::c_int = 12;

/// `struct kvm_userspace_memory_region`.
#[repr(C)]
struct KvmUserspaceMemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

/// An open `/dev/kvm`.
pub struct Kvm(File);

impl Kvm {
    pub fn open() -> Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open("/dev/kvm").map_err(|e| {
            let hint = match e.kind() {
                io::ErrorKind::PermissionDenied => "permission denied (run as root or in the device's group)",
                io::ErrorKind::NotFound => "not found (no KVM on this host)",
                _ => "",
            };
            if hint.is_empty() {
                anyhow::Error::new(e).context("/dev/kvm")
            } else {
                anyhow::anyhow!("/dev/kvm: {hint}")
            }
        })?;
        let kvm = Self(file);
        let version = kvm.ioctl(KVM_GET_API_VERSION, 0).context("KVM_GET_API_VERSION")?;
        if version != KVM_API_VERSION {
            bail!("/dev/kvm: API version {version}, expected {KVM_API_VERSION}");
        }
        Ok(kvm)
    }

    /// `KVM_CREATE_VM` (default VM type). Registers the notifier on this process's mm, then waits until the agent
    /// under test has its subscription hooks attached (`--await-hooks`).
    pub fn create_vm(&self) -> Result<Vm> {
        let fd = self.ioctl(KVM_CREATE_VM, 0).context("KVM_CREATE_VM")?;
        // SAFETY: KVM_CREATE_VM returned a new fd that nothing else owns.
        let vm = Vm(unsafe { OwnedFd::from_raw_fd(fd) });
        crate::agent::await_subscription_hooks()?;
        Ok(vm)
    }

    fn ioctl(&self, request: u64, arg: libc::c_ulong) -> io::Result<libc::c_int> {
        ioctl(self.0.as_raw_fd(), request, arg)
    }
}

/// A VM without vCPUs: just a notifier subscription and memslots.
pub struct Vm(OwnedFd);

impl Vm {
    /// `KVM_SET_USER_MEMORY_REGION`: memslot `slot` at guest physical `gpa` backed by all of `memory`.
    pub fn set_memslot(&self, slot: u32, gpa: u64, memory: &AnonRegion) -> Result<()> {
        let region = KvmUserspaceMemoryRegion {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: memory.len() as u64,
            userspace_addr: memory.addr(),
        };
        ioctl(self.0.as_raw_fd(), KVM_SET_USER_MEMORY_REGION, &raw const region as libc::c_ulong)
            .context("KVM_SET_USER_MEMORY_REGION")?;
        Ok(())
    }

    /// Closes the VM fd. The last reference goes, so `kvm_destroy_vm` runs (from the fput task work, before
    /// `close` returns to user space) and unregisters the notifier.
    pub fn destroy(self) -> Result<()> {
        let fd = self.0.into_raw_fd();
        // SAFETY: we own `fd` (taken out of the OwnedFd above) and never use it again.
        if unsafe { libc::close(fd) } != 0 {
            return Err(io::Error::last_os_error()).context("closing the VM fd");
        }
        Ok(())
    }
}

/// VMs with one memslot each over the same guest memory (one VM unless a scenario asks for more). Field order is the
/// drop order: VMs first (unregistering their notifiers), memory second (so the munmap happens with no notifier and
/// adds no bracket).
pub struct GuestVm {
    pub vms: Vec<Vm>,
    pub memory: AnonRegion,
}

impl GuestVm {
    /// Maps `bytes` of guest memory *first*, then creates one VM and the memslot: everything the scenario needs
    /// exists before the notifier does.
    pub fn create(kvm: &Kvm, bytes: usize) -> Result<Self> {
        let memory = AnonRegion::map(bytes).context("mapping guest memory")?;
        Self::over(kvm, memory, 1)
    }

    /// `vms` VMs (at least one), each with memslot 0 over all of `memory`, which the caller prepared. Each VM
    /// registers its own notifier on this mm, so every bracket calls KVM `vms` times.
    pub fn over(kvm: &Kvm, memory: AnonRegion, vms: u32) -> Result<Self> {
        if vms == 0 {
            bail!("a guest needs at least one VM");
        }
        // Allocated before the first KVM_CREATE_VM; pushing within the capacity never reallocates.
        let mut list = Vec::with_capacity(vms as usize);
        for _ in 0..vms {
            let vm = kvm.create_vm()?;
            vm.set_memslot(0, 0, &memory)?;
            list.push(vm);
        }
        Ok(Self { vms: list, memory })
    }

    /// Explicit teardown in the documented order, with errors reported.
    pub fn teardown(self) -> Result<()> {
        let Self { vms, memory } = self;
        destroy_all(vms)?;
        memory.unmap().context("unmapping guest memory")
    }
}

/// Destroys VMs in order; every VM is closed even if an earlier close failed (the first error is returned).
pub fn destroy_all(vms: Vec<Vm>) -> Result<()> {
    let mut first = None;
    for vm in vms {
        if let Err(e) = vm.destroy() {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn ioctl(fd: libc::c_int, request: u64, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: `request` is one of the KVM ioctls above and `arg` is either 0 or points to the matching live struct.
    let rc = unsafe { libc::ioctl(fd, request as libc::Ioctl, arg) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_kvm_h() {
        assert_eq!(KVM_GET_API_VERSION, 0xae00);
        assert_eq!(KVM_CREATE_VM, 0xae01);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
    }
}
