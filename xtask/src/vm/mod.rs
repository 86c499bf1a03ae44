//! `cargo xtask vm`: stock Debian kernels under QEMU, for the probe modes this machine's own
//! kernel refuses (fentry/fexit, kprobes): TCG with `-cpu max`, nested KVM through kvm-amd, results over a serial
//! port.
//!
//! * `fetch <kernel>`: resolve through a private apt configuration (`apt_sources`, `apt`,
//!   `resolve`), download and cache vmlinuz + the KVM modules (`kernels`).
//! * `run --kernel K [--file HOST:GUEST]... -- CMD...`: build an initramfs (`initramfs`,
//!   `guest_init`), boot it (`qemu`) and return the command's output and exit status.
//! * `list`: the cached kernels. `table [--update-readme]`: the tested-kernels table from the VM
//!   tier's `target/vm/results.json` (`results`, `table`). `btf --kernel K`: a cached kernel's
//!   BTF (`btf`), to feed the agent a foreign struct layout on purpose.
//!
//! The test tier (`tiers/vm.rs`) uses the same pieces through [`run_in_guest`].
//! Everything lives under `target/vm/`: `apt/`, `kernels/<release>/`,
//! `runs/<release>-<label>-<pid>/` (console, output and QEMU logs of one run; kept for a day).

mod apt;
mod apt_sources;
mod btf;
pub mod cli;
pub mod exec;
mod guest_init;
pub mod initramfs;
pub mod kernels;
pub mod kmod;
pub mod qemu;
pub mod rdma;
pub mod resolve;
pub mod results;
pub mod rootfs;
pub mod system;
pub mod table;

use std::{
    fs,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};

use crate::{progress, workspace::Workspace};
use cli::{BtfArgs, FetchArgs, RunArgs, TableArgs, VmArgs, VmCommand};
use guest_init::Marker;
use initramfs::GuestFile;
use kernels::CachedKernel;
use resolve::Request;

/// How long the logs of a guest run are kept.
const RUNS_KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// How one guest is run.
pub struct GuestOptions {
    /// Names the run directory, `target/vm/runs/<release>-<label>-<pid>/`.
    pub label: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub timeout: Duration,
    /// Echo the guest's output live, each line after this prefix (`guest|`; the `vm` tier names kernel and mode,
    /// as its guests run side by side).
    pub echo: Option<String>,
}

pub fn run(ws: &Workspace, args: &VmArgs) -> Result<ExitCode> {
    match &args.command {
        VmCommand::Fetch(a) => fetch(ws, a),
        VmCommand::Run(a) => run_command(ws, a),
        VmCommand::List => list(ws),
        VmCommand::Btf(a) => btf_command(ws, a),
        VmCommand::Table(a) => table_command(ws, a),
    }
}

/// The kernel for `request`: cached, or fetched.
pub fn kernel(ws: &Workspace, request: &Request) -> Result<CachedKernel> {
    match kernels::find_cached(ws, request)? {
        Some(k) => {
            say(format!("using cached {} ({} {}) for {request}", k.meta.release, k.meta.package, k.meta.version));
            Ok(k)
        }
        None => kernels::fetch(ws, request, false),
    }
}

/// Builds the initramfs and boots `kernel` with `files`, running `command` as root.
pub fn run_in_guest(
    ws: &Workspace,
    kernel: &CachedKernel,
    files: &[GuestFile],
    command: &[String],
    opts: &GuestOptions,
) -> Result<qemu::Finished> {
    // One directory per run (several people or tiers may boot guests at the same time).
    let runs = ws.target_dir().join("vm/runs");
    prune(&runs);
    let dir = runs.join(format!("{}-{}-{}", kernel.meta.release, opts.label, std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let marker = Marker::new(format!("{:x}-{nanos:x}", std::process::id()));
    say(format!("building the initramfs for {} ({} extra file(s))", kernel.meta.release, files.len()));
    let initrd = initramfs::build(kernel, files, command, &marker, &dir)?;
    let size = fs::metadata(&initrd).map_or(0, |m| m.len());
    say(format!(
        "booting {} ({} CPUs, {} MiB, TCG, limit {} s; initramfs {:.1} MB; logs in {})",
        kernel.meta.release,
        opts.cpus,
        opts.memory_mib,
        opts.timeout.as_secs(),
        size as f64 / 1e6,
        ws.display(&dir)
    ));
    let result = qemu::boot(&qemu::Boot {
        kernel,
        initrd: &initrd,
        dir: &dir,
        marker: &marker,
        memory_mib: opts.memory_mib,
        cpus: opts.cpus,
        timeout: opts.timeout,
        echo: opts.echo.as_deref(),
    });
    // The logs stay for a post-mortem; the initramfs is large and rebuilt every time.
    let _ = fs::remove_file(&initrd);
    result
}

/// Removes run directories older than [`RUNS_KEPT_FOR`].
fn prune(runs: &std::path::Path) {
    let Ok(entries) = fs::read_dir(runs) else { return };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > RUNS_KEPT_FOR);
        if old {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn fetch(ws: &Workspace, args: &FetchArgs) -> Result<ExitCode> {
    let request: Request = args.kernel.parse()?;
    let k = kernels::fetch(ws, &request, args.refresh)?;
    say(format!(
        "{request}: {} ({} {} from {}), modules {}, in {}",
        k.meta.release,
        k.meta.package,
        k.meta.version,
        k.meta.suite,
        k.meta.modules.join(" "),
        ws.display(&k.dir)
    ));
    Ok(ExitCode::SUCCESS)
}

fn run_command(ws: &Workspace, args: &RunArgs) -> Result<ExitCode> {
    let request: Request = args.kernel.parse()?;
    let kernel = kernel(ws, &request)?;
    let opts = GuestOptions {
        label: "run".into(),
        memory_mib: args.memory,
        cpus: args.cpus,
        timeout: Duration::from_secs(args.timeout),
        echo: Some("guest|".into()),
    };
    let done = run_in_guest(ws, &kernel, &args.files, &args.command, &opts)?;
    say(format!(
        "{}: command exited with status {} after {:.1} s (console: {})",
        kernel.meta.release,
        done.status,
        done.elapsed.as_secs_f64(),
        ws.display(&done.console_log)
    ));
    Ok(ExitCode::from(u8::try_from(done.status).unwrap_or(1)))
}

fn list(ws: &Workspace) -> Result<ExitCode> {
    let cached = kernels::cached(ws);
    if cached.is_empty() {
        say(format!("no kernel cached in {}", ws.display(&kernels::cache_root(ws))));
    }
    for k in cached {
        println!(
            "{:<36} {:<6} {:<24} {:<20} {}",
            k.meta.release,
            k.meta.series,
            k.meta.version,
            k.meta.suite,
            k.meta.modules.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn btf_command(ws: &Workspace, args: &BtfArgs) -> Result<ExitCode> {
    let kernel = kernel(ws, &args.kernel.parse()?)?;
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| ws.target_dir().join("vm/btf").join(format!("{}.btf", kernel.meta.release)));
    let path = btf::extract(&kernel, &out)?;
    let size = fs::metadata(&path).map_or(0, |m| m.len());
    say(format!("BTF of {} ({:.1} MB) in {}", kernel.meta.release, size as f64 / 1e6, ws.display(&path)));
    Ok(ExitCode::SUCCESS)
}

fn table_command(ws: &Workspace, args: &TableArgs) -> Result<ExitCode> {
    let results = results::Results::read(ws)?;
    let text = table::render(&results);
    if !args.update_readme {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let readme = args.readme.clone().unwrap_or_else(|| ws.root.join("README.md"));
    let old = fs::read_to_string(&readme).with_context(|| format!("reading {}", readme.display()))?;
    let new = table::splice(&old, &text).with_context(|| format!("updating {}", readme.display()))?;
    if new == old {
        say(format!("{} already has this table", ws.display(&readme)));
    } else {
        fs::write(&readme, new).with_context(|| format!("writing {}", readme.display()))?;
        say(format!("rewrote the tested-kernels block of {}", ws.display(&readme)));
    }
    Ok(ExitCode::SUCCESS)
}

fn say(message: impl std::fmt::Display) {
    progress::say("vm", message);
}

/// The Debian archive this machine's apt uses (the VM kernels and the ship tier's image base come from it).
pub fn debian_mirror() -> anyhow::Result<String> {
    Ok(apt_sources::discover()?.main.uri)
}
