//! Flags of `cargo xtask vm …` (registered as one variant in `crate::cli`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::initramfs::GuestFile;

#[derive(Args)]
pub struct VmArgs {
    #[command(subcommand)]
    pub command: VmCommand,
}

#[derive(Subcommand)]
pub enum VmCommand {
    /// Resolve a Debian kernel through a private apt configuration, download it and cache vmlinuz and
    /// the KVM modules under target/vm/kernels/<release>/ (skipped when cached).
    Fetch(FetchArgs),
    /// Boot a kernel under QEMU (TCG) with a busybox initramfs and run a command in it as root.
    Run(RunArgs),
    /// List the cached kernels.
    List,
    /// Extract a cached kernel's BTF (its /sys/kernel/btf/vmlinux) from its vmlinuz, e.g. to hand
    /// it to the agent in another kernel's guest and watch the vm tier catch the wrong layout.
    Btf(BtfArgs),
    /// Print the tested-kernels table (Markdown) from target/vm/results.json.
    Table(TableArgs),
}

#[derive(Args)]
pub struct FetchArgs {
    /// A series (`6.1`, `6.12`), `sid` (its newest kernel), a release (`6.1.0-56-amd64`) or a
    /// `linux-image-…` package.
    #[arg(value_name = "KERNEL")]
    pub kernel: String,
    /// Run `apt-get update` even if the private lists are less than a day old.
    #[arg(long)]
    pub refresh: bool,
}

#[derive(Args)]
pub struct RunArgs {
    /// Kernel to boot, as for `fetch`; a cached one is used without asking apt.
    #[arg(long, value_name = "KERNEL")]
    pub kernel: String,
    /// Hard limit for the whole boot and command, in seconds; QEMU is killed after it.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
    /// A file for the guest, `HOST:GUEST` (repeatable); ELF files bring the libraries `ldd` lists.
    #[arg(long = "file", value_name = "HOST:GUEST")]
    pub files: Vec<GuestFile>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// The command to run in the guest (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Args)]
pub struct TableArgs {
    /// Rewrite the README's `<!-- tested-kernels:start -->` … `<!-- tested-kernels:end -->` block.
    #[arg(long)]
    pub update_readme: bool,
    /// The README to rewrite (default: README.md in the workspace root).
    #[arg(long, value_name = "PATH", requires = "update_readme")]
    pub readme: Option<PathBuf>,
}

#[derive(Args)]
pub struct BtfArgs {
    /// Kernel, as for `fetch` (fetched if not cached).
    #[arg(long, value_name = "KERNEL")]
    pub kernel: String,
    /// Output file [default: target/vm/btf/<release>.btf].
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
}
