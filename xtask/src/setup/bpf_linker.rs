//! bpf-linker, built from the crate registry against Debian's LLVM 22 into the project tools dir
//! (`<tools>/bin/bpf-linker`, where `agent/build.rs` looks for it). Its LLVM major must equal
//! rustc-web's, hence `--no-default-features --features llvm-22` (the default is LLVM 23).

use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::{process, toolchain, workspace::Workspace};

pub const VERSION: &str = "0.13.0";
const LLVM_FEATURE: &str = "llvm-22";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn path(ws: &Workspace) -> PathBuf {
    ws.tools_bin().join("bpf-linker")
}

/// The version `bpf-linker --version` reports, if it runs at all.
pub fn installed_version(ws: &Workspace) -> Option<String> {
    let output = process::capture(Command::new(path(ws)).arg("--version")).ok()?;
    if !output.status.success() {
        return None;
    }
    parse_version(&String::from_utf8_lossy(&output.stdout))
}

fn parse_version(output: &str) -> Option<String> {
    let rest = output.trim().strip_prefix("bpf-linker ")?;
    Some(rest.split_whitespace().next()?.to_string())
}

/// `cargo install` with Debian's cargo (no rustup on PATH); ~1–2 min on 2 cores.
pub fn install(ws: &Workspace) -> Result<()> {
    let mut cmd = toolchain::debian(ws, toolchain::DEBIAN_CARGO, &[]);
    cmd.env("LLVM_PREFIX", LLVM_PREFIX)
        .args(["install", &format!("bpf-linker@{VERSION}"), "--locked"])
        .args(["--no-default-features", "--features", LLVM_FEATURE])
        // Replaces a binary of another version or one cargo does not track.
        .arg("--force")
        .arg("--root")
        .arg(&ws.tools);
    process::run(&mut cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_line() {
        assert_eq!(parse_version("bpf-linker 0.13.0\n").as_deref(), Some("0.13.0"));
        assert_eq!(parse_version("something else"), None);
    }
}
