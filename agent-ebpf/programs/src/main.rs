//! mmuscope's kernel-side programs.
//!
//! One object holds every probe family and every attach alternative; the agent decides at
//! start-up which programs to load (see the agent's `probes` module). Struct offsets come from
//! the `LAYOUT` global that the agent fills from the running kernel's BTF; this crate contains
//! no offset literals.
#![no_std]
#![no_main]

mod births;
mod brackets;
mod callbacks;
mod capability;
mod cause;
mod cgroup;
mod change_pte;
mod floor;
mod fork;
mod fork_hugetlb;
mod interval;
mod ksm_cow;
mod kvm;
mod maps;
mod operations;
mod regs;
mod secondary;
mod stacks;
mod subscriber_mask;
mod subscribers;
mod threads;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never executed.
    loop {}
}

/// fentry/fexit need a GPL-compatible licence to be loadable.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
