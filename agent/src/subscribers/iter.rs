//! Runs the inventory iterator: `BPF_LINK_CREATE` on the loaded `iter/task` program, then
//! `BPF_ITER_CREATE`, then read the fd to its end (each read runs the program over the tasks).
//!
//! aya 0.14 can do the same only through `&mut Iter` inside the `Ebpf` object, and its
//! `IterLink::into_file` consumes the link; the sweeper instead holds a duplicate of the
//! program fd and makes a short-lived link per sweep with these two bpf(2) calls.

use std::{
    fs::File,
    io::{self, Read},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
};

use aya::programs::ProgramFd;

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// `union bpf_attr`, large enough for both commands; unused bytes stay zero as the kernel requires.
#[repr(C, align(8))]
struct Attr([u32; 32]);

fn bpf(cmd: libc::c_long, attr: &Attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid, zero-padded bpf_attr of the size passed; both commands return
    // a new fd (or -1), which we own from here on.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const Attr, std::mem::size_of::<Attr>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Everything the iterator program writes in one pass over the tasks.
pub fn run(program: &ProgramFd) -> io::Result<Vec<u8>> {
    let mut attr = Attr([0; 32]);
    attr.0[0] = program.as_fd().as_raw_fd() as u32; // link_create.prog_fd
    attr.0[2] = BPF_TRACE_ITER; // link_create.attach_type
    let link = bpf(BPF_LINK_CREATE, &attr)?;
    let mut attr = Attr([0; 32]);
    attr.0[0] = link.as_raw_fd() as u32; // iter_create.link_fd
    let iter = bpf(BPF_ITER_CREATE, &attr)?;
    let mut out = Vec::new();
    File::from(iter).read_to_end(&mut out)?;
    Ok(out)
}
