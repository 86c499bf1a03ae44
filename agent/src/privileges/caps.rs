//! Capability sets of one thread, read and written with the raw `capget`/`capset` syscalls.
//!
//! Raw syscalls rather than a crate because [`set_current_thread`] also runs inside a signal handler
//! (see `threads.rs`), where only async-signal-safe code may run: no allocation, no locks.

use std::io;

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets, as two 32-bit halves.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    /// 0: the calling thread.
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// One thread's effective, permitted and inheritable sets, one bit per capability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

impl Caps {
    fn to_raw(self) -> [Data; 2] {
        let half = |v: u64, hi: bool| (if hi { v >> 32 } else { v }) as u32;
        [false, true].map(|hi| Data {
            effective: half(self.effective, hi),
            permitted: half(self.permitted, hi),
            inheritable: half(self.inheritable, hi),
        })
    }
}

pub const fn bit(cap: u32) -> u64 {
    1 << cap
}

/// The calling thread's sets.
pub fn current_thread() -> io::Result<Caps> {
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: header and a two-element data array, as capget(2) expects for version 3.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |f: fn(&Data) -> u32| u64::from(f(&data[0])) | (u64::from(f(&data[1])) << 32);
    Ok(Caps {
        effective: join(|d| d.effective),
        permitted: join(|d| d.permitted),
        inheritable: join(|d| d.inheritable),
    })
}

/// Replaces the calling thread's sets (only ever shrinking `permitted`). Async-signal-safe: returns the raw
/// syscall result (0 or -1) and leaves `errno` to the caller.
pub fn set_current_thread_raw(caps: Caps) -> libc::c_long {
    let header = Header { version: VERSION_3, pid: 0 };
    let data = caps.to_raw();
    // SAFETY: header and a two-element data array, as capset(2) expects for version 3; both outlive the call.
    unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }
}

pub fn set_current_thread(caps: Caps) -> io::Result<()> {
    if set_current_thread_raw(caps) != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The highest capability number this kernel knows (`CAP_BPF` exists from 5.8).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_split_into_32_bit_halves() {
        let raw = Caps { effective: bit(CAP_BPF) | bit(CAP_SYS_ADMIN), permitted: u64::MAX, inheritable: 0 }.to_raw();
        assert_eq!((raw[0].effective, raw[1].effective), (1 << 21, 1 << 7));
        assert_eq!((raw[0].permitted, raw[1].permitted), (u32::MAX, u32::MAX));
    }

    #[test]
    fn reading_our_own_sets_works() {
        let caps = current_thread().unwrap();
        assert_eq!(caps.effective & !caps.permitted, 0, "effective must be a subset of permitted");
    }
}
