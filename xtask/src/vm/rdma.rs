//! The user space of the `rdma-odp` scenario for the guest: the verbs helper (`tests/rdma/odp.c`, compiled here with
//! gcc against libibverbs-dev; why C, in its header), the `rdma` tool (iproute2) that adds the soft-RoCE link, and
//! the rxe provider with its `rxe.driver` file. libibverbs finds providers through `/etc/libibverbs.d/*.driver` and
//! dlopens them, so `ldd` of the helper does not list the provider: it is named here. The libraries `ldd` does list
//! (libibverbs, libnl, the tool's) come along with each ELF file (`initramfs`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{exec, initramfs::GuestFile};
use crate::workspace::Workspace;

/// The helper's source, below the workspace root.
const SOURCE: &str = "tests/rdma/odp.c";
/// Where the workload looks for the helper in the guest.
pub const HELPER: &str = "/usr/lib/mmuscope/mmuscope-rdma-odp";
/// iproute2's RDMA tool.
const RDMA_TOOL: &str = "/usr/bin/rdma";
/// The provider's driver file: `driver rxe`.
const RXE_DRIVER: &str = "/etc/libibverbs.d/rxe.driver";
/// Where Debian's ibverbs-providers puts the providers (multiarch).
const PROVIDER_DIR: &str = "/usr/lib/x86_64-linux-gnu/libibverbs";
const LIMIT: Duration = Duration::from_secs(120);

/// The files `rdma-odp` needs in the guest, the helper built first (into `target/vm/rdma/`).
pub fn guest_files(ws: &Workspace) -> Result<Vec<GuestFile>> {
    let out = ws.target_dir().join("vm/rdma");
    fs::create_dir_all(&out)?;
    let helper = out.join("mmuscope-rdma-odp");
    exec::output(
        Command::new("gcc")
            .args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&helper)
            .arg(ws.root.join(SOURCE))
            .args(["-libverbs", "-pthread"]),
        LIMIT,
    )
    .context("building the verbs helper (needs gcc and libibverbs-dev: `cargo xtask setup`)")?;
    let mut files = vec![GuestFile { host: helper, guest: PathBuf::from(HELPER) }];
    for path in [RDMA_TOOL, RXE_DRIVER] {
        if !Path::new(path).is_file() {
            bail!("{path} is missing (iproute2, ibverbs-providers: `cargo xtask setup`)");
        }
        files.push(GuestFile { host: PathBuf::from(path), guest: PathBuf::from(path) });
    }
    files.push(provider()?);
    Ok(files)
}

/// The rxe provider (`librxe-rdmav<ABI>.so`: the ABI number is rdma-core's, so it is looked up, not written down).
fn provider() -> Result<GuestFile> {
    let found = fs::read_dir(PROVIDER_DIR)
        .with_context(|| format!("reading {PROVIDER_DIR} (ibverbs-providers: `cargo xtask setup`)"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("librxe-rdmav") && n.ends_with(".so"))
        })
        .with_context(|| format!("no librxe-rdmav*.so in {PROVIDER_DIR}"))?;
    Ok(GuestFile { host: found.clone(), guest: found })
}
