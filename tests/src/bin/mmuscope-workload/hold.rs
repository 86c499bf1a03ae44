//! `--hold`: keep the scenario's state (VMs registered, buffers pinned) until the harness closes our stdin, so that
//! it can look at the agent's subscriber inventory meanwhile. Runs while notifiers are registered, so it neither
//! allocates nor touches mappings: one write(2) to stderr, then read(2) into a stack buffer until EOF.

/// The stderr line the harness waits for.
pub const HOLDING: &str = "mmuscope-workload: holding; close stdin to continue";

pub fn until_stdin_closes(enabled: bool) {
    if !enabled {
        return;
    }
    let line = b"mmuscope-workload: holding; close stdin to continue\n";
    debug_assert_eq!(&line[..line.len() - 1], HOLDING.as_bytes());
    // SAFETY: plain syscalls on fds 0 and 2 with valid buffers.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    let mut buf = [0u8; 64];
    loop {
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted) {
            break;
        }
    }
}
