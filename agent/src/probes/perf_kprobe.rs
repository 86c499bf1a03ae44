//! A kprobe or kretprobe opened by address after start-up, with an already loaded program attached to it.
//!
//! aya attaches kprobes while it loads; this is for the subscriber callbacks that first appear later (a module
//! loaded after the agent started). A kprobe is a perf event of the `kprobe` PMU (`perf_event_open`, which needs
//! CAP_PERFMON, or CAP_SYS_ADMIN before 5.8); the program is attached with `PERF_EVENT_IOC_SET_BPF`, which needs no
//! capability of its own. The event is given the function's address, not its name: two modules may have static
//! functions of one name, and the kernel moves an address at a function's start past its `endbr64` itself.

use std::{
    fs, io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use aya_obj::generated::{PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_SET_BPF, PERF_FLAG_FD_CLOEXEC, perf_event_attr};

const PMU: &str = "/sys/bus/event_source/devices/kprobe";

/// Opens a kprobe (`retprobe`: a kretprobe) at `address` and attaches `program` to it; closing the fd detaches.
pub fn attach(program: BorrowedFd<'_>, address: u64, retprobe: bool) -> io::Result<OwnedFd> {
    let pmu_type: u32 =
        read_trimmed(&format!("{PMU}/type"))?.parse().map_err(|e| io::Error::other(format!("{PMU}/type: {e}")))?;
    let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = pmu_type;
    attr.size = std::mem::size_of::<perf_event_attr>() as u32;
    if retprobe {
        attr.config = 1 << retprobe_bit()?;
    }
    // No name (`kprobe_func` 0): the address is `kprobe_addr`.
    attr.__bindgen_anon_3.kprobe_func = 0;
    attr.__bindgen_anon_4.kprobe_addr = address;
    attr.__bindgen_anon_1.sample_period = 1;
    attr.__bindgen_anon_2.wakeup_events = 1;
    // SAFETY: a fully initialized attr of its own size; pid -1 with cpu 0 is how a kprobe event is opened.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const perf_event_attr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: perf_event_open returned a new fd that nothing else owns.
    let event = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    ioctl(&event, PERF_EVENT_IOC_SET_BPF, program.as_raw_fd() as libc::c_ulong)?;
    ioctl(&event, PERF_EVENT_IOC_ENABLE, 0)?;
    Ok(event)
}

fn ioctl(fd: &OwnedFd, request: u32, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: perf event ioctls that take an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The `config` bit that makes a kprobe a kretprobe (`format/retprobe` reads `config:0`).
fn retprobe_bit() -> io::Result<u32> {
    let format = read_trimmed(&format!("{PMU}/format/retprobe"))?;
    parse_config_bit(&format).ok_or_else(|| io::Error::other(format!("{PMU}/format/retprobe: {format:?}")))
}

fn parse_config_bit(format: &str) -> Option<u32> {
    format.strip_prefix("config:")?.parse().ok().filter(|b| *b < 64)
}

fn read_trimmed(path: &str) -> io::Result<String> {
    fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retprobe_bit_of_the_pmu_format() {
        assert_eq!(parse_config_bit("config:0"), Some(0));
        assert_eq!(parse_config_bit("config:9"), Some(9));
        assert_eq!(parse_config_bit("config1:0"), None, "another field is not the bit");
        assert_eq!(parse_config_bit("config:0-7"), None, "a range is not one bit");
        assert_eq!(parse_config_bit("config:64"), None);
    }
}
