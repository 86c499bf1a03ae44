//! Tier `lint`: rustfmt and clippy with `-D warnings`, for the workspace (host cargo) and for the
//! eBPF crate, which clippy checks for its own target with Debian's toolchain.

use anyhow::Result;

use super::{Context, Outcome, run_all};
use crate::toolchain::{self, BPF_MANIFEST};

pub fn run(ctx: &Context) -> Result<Outcome> {
    let ws = ctx.ws;
    let mut fmt = toolchain::host_cargo(ws);
    fmt.args(["fmt", "--all", "--check"]);

    let mut clippy = toolchain::host_cargo(ws);
    clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);

    let mut bpf_fmt = toolchain::host_cargo(ws);
    bpf_fmt.args(["fmt", "--check", "--manifest-path", BPF_MANIFEST]);

    let mut bpf_clippy = toolchain::bpf_clippy(ws);
    bpf_clippy.args(["--", "-D", "warnings"]);

    run_all([fmt, clippy, bpf_fmt, bpf_clippy])
}
