//! The project's test module (`tests/kmod/mmuscope_mirror/`, GPL-2.0): loading it and its ioctls on
//! `/dev/mmuscope_mirror`: the HMM mirror (an interval notifier) and the secondary-TLB subscriber (a classic
//! notifier implementing only the kernel's secondary-TLB op). The structures and numbers mirror `mmuscope_mirror.h`.

use std::{
    ffi::CString,
    fs::{File, OpenOptions},
    io,
    os::fd::AsRawFd,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

const DEVICE: &str = "/dev/mmuscope_mirror";

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Register {
    addr: u64,
    len: u64,
}

/// `MIRROR_PAUSE_BEFORE_FAULT`: the first attempt stops between `mmu_interval_read_begin` and `hmm_range_fault`.
pub const PAUSE_BEFORE_FAULT: u64 = 1;
/// `MIRROR_PAUSE_BEFORE_RETRY`: the first attempt stops between `hmm_range_fault` and `mmu_interval_read_retry`.
pub const PAUSE_BEFORE_RETRY: u64 = 2;
const RELEASE_AFTER_READER_BLOCKS: u64 = 1;

/// `struct mirror_fault`: in `addr`, `npages`, `flags`; out what the collision-retry loop saw.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Fault {
    pub addr: u64,
    pub npages: u64,
    pub flags: u64,
    pub attempts: u64,
    pub retries: u64,
    pub busy: u64,
    /// `mmu_interval_read_begin` calls after an invalidation since this task's previous one on the mirror.
    pub collisions: u64,
}

/// `struct mirror_status`: the module's own counters since registration (the ground truth), and its state.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub invalidations: u64,
    pub confirmed_waits: u64,
    pub retries: u64,
    pub busy: u64,
    pub holding: u64,
    pub paused: u64,
    pub reader_entered: u64,
    /// Read collisions of every fault (the module marks each reading task in `ops->invalidate`).
    pub collisions: u64,
}

/// `struct mirror_tlb_status`: what the secondary-TLB subscriber received since it registered (the ground truth).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TlbStatus {
    /// `MIRROR_TLB_API_*`: 1 `->invalidate_range` (before 6.6), 2 `->arch_invalidate_secondary_tlbs`.
    pub api: u64,
    pub calls: u64,
    /// Calls over `(0, ~0UL)`.
    pub full_mm: u64,
    /// Bytes of the other calls.
    pub range_bytes: u64,
}

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'M' as u64) << 8) | nr
}
const IOC_W: u64 = 1;
const IOC_R: u64 = 2;
const REGISTER: u64 = ioc(IOC_W, 1, size_of::<Register>());
const UNREGISTER: u64 = ioc(0, 2, 0);
const FAULT: u64 = ioc(IOC_W | IOC_R, 3, size_of::<Fault>());
const HOLD_NEXT: u64 = ioc(0, 4, 0);
const RELEASE: u64 = ioc(IOC_W, 5, size_of::<u64>());
const RESUME: u64 = ioc(0, 6, 0);
const STATUS: u64 = ioc(IOC_R, 7, size_of::<Status>());
const TLB_REGISTER: u64 = ioc(0, 8, 0);
const TLB_UNREGISTER: u64 = ioc(0, 9, 0);
const TLB_STATUS: u64 = ioc(IOC_R, 10, size_of::<TlbStatus>());

/// Loads the module from `path` (already loaded is fine).
pub fn load(path: &Path) -> Result<()> {
    if Path::new(DEVICE).exists() {
        return Ok(());
    }
    let file = File::open(path).with_context(|| format!("opening the mirror module {}", path.display()))?;
    let params = CString::default();
    // SAFETY: finit_module(fd, "", 0) on an open file; the kernel copies the module.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if r != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            return Err(err).with_context(|| format!("finit_module({})", path.display()));
        }
    }
    Ok(())
}

/// One open of the device: one mirror (one interval notifier once registered).
pub struct Mirror {
    file: File,
}

impl Mirror {
    pub fn open() -> Result<Self> {
        let file =
            OpenOptions::new().read(true).write(true).open(DEVICE).with_context(|| format!("opening {DEVICE}"))?;
        Ok(Self { file })
    }

    fn ioctl<T>(&self, request: u64, arg: *mut T) -> io::Result<()> {
        // SAFETY: `arg` points to a live value of the size the request encodes (or is unused).
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), request as _, arg) };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// `mmu_interval_notifier_insert` on `[addr, addr + len)` of this process's mm.
    pub fn register(&self, addr: u64, len: u64) -> io::Result<()> {
        let mut r = Register { addr, len };
        self.ioctl(REGISTER, &mut r)
    }

    /// `mmu_interval_notifier_remove`.
    pub fn unregister(&self) -> io::Result<()> {
        self.ioctl(UNREGISTER, std::ptr::null_mut::<u8>())
    }

    /// The collision-retry loop over `npages` pages at `addr`, pausing its first attempt at `flags`.
    pub fn fault(&self, addr: u64, npages: u64, flags: u64) -> io::Result<Fault> {
        let mut f = Fault { addr, npages, flags, ..Fault::default() };
        self.ioctl(FAULT, &mut f)?;
        Ok(f)
    }

    /// Holds the next blockable invalidation of the interval inside `ops->invalidate`.
    pub fn hold_next(&self) -> io::Result<()> {
        self.ioctl(HOLD_NEXT, std::ptr::null_mut::<u8>())
    }

    /// Releases the held invalidation once a reader sleeps in `mmu_interval_read_begin` (the module counts that
    /// confirmed wait); returns when the invalidation has left the callback.
    pub fn release_after_reader_blocks(&self) -> io::Result<()> {
        let mut flags = RELEASE_AFTER_READER_BLOCKS;
        self.ioctl(RELEASE, &mut flags)
    }

    pub fn resume(&self) -> io::Result<()> {
        self.ioctl(RESUME, std::ptr::null_mut::<u8>())
    }

    pub fn status(&self) -> io::Result<Status> {
        let mut s = Status::default();
        self.ioctl(STATUS, &mut s)?;
        Ok(s)
    }

    /// Registers the secondary-TLB subscriber (`mmu_notifier_register`) on this process's mm.
    pub fn tlb_register(&self) -> io::Result<()> {
        self.ioctl(TLB_REGISTER, std::ptr::null_mut::<u8>())
    }

    /// `mmu_notifier_unregister` of the secondary-TLB subscriber.
    pub fn tlb_unregister(&self) -> io::Result<()> {
        self.ioctl(TLB_UNREGISTER, std::ptr::null_mut::<u8>())
    }

    pub fn tlb_status(&self) -> io::Result<TlbStatus> {
        let mut s = TlbStatus::default();
        self.ioctl(TLB_STATUS, &mut s)?;
        Ok(s)
    }

    /// Polls the status until `ready` holds (no allocation: safe while an invalidation is held).
    pub fn wait_for(&self, what: &str, ready: impl Fn(&Status) -> bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ready(&self.status()?) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the mirror module never reported {what}");
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}
