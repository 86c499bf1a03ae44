//! Giving freed heap back to the kernel. glibc's malloc keeps freed memory in its arenas (one per thread that
//! allocated), so a large short-lived allocation — the parsed kernel BTFs at start-up, the ~10 allocations per series
//! of a scrape — would otherwise stay in the agent's RSS at its high-water mark, once per arena (BENCHMARKS.md).

/// Returns every arena's free pages to the kernel (`malloc_trim(0)`); a few hundred microseconds for a scrape's heap,
/// so call it off the request path.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap memory to the kernel; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
