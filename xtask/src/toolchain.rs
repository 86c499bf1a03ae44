//! Which cargo runs what.
//!
//! The workspace (agent, ABI, tests, xtask) builds with the host cargo that runs this xtask
//! (rustup's). The eBPF crate and bpf-linker build with Debian's toolchain (`rustc-web` 1.96,
//! LLVM 22), which must not see rustup at all: a rustup `rustc` proxy first on PATH has no `core`
//! for the bpf target. So the Debian commands get a PATH without rustup, `RUSTC=/usr/bin/rustc`,
//! and none of the `CARGO*`/`RUST*` variables the outer cargo exported (same rule as
//! `agent/build.rs`).

use std::{env, ffi::OsString, path::PathBuf, process::Command};

use crate::workspace::Workspace;

pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// Called directly: `/usr/bin/cargo clippy` would find rustup's `cargo-clippy` proxy first,
/// because cargo looks for subcommands in `$CARGO_HOME/bin` before PATH.
pub const DEBIAN_CARGO_CLIPPY: &str = "/usr/bin/cargo-clippy";
/// The eBPF target; its prebuilt `core` comes from `libstd-rust-web-dev-bpf`.
pub const BPF_TARGET: &str = "bpfel-unknown-none";
/// aya-ebpf needs `asm_experimental_arch`; the bootstrap is scoped to that crate, never global
/// (a global `RUSTC_BOOTSTRAP=1` makes aya-build ask for `-Z build-std`).
pub const BPF_RUSTC_BOOTSTRAP: &str = "aya_ebpf";
/// The eBPF crate's manifest, relative to the workspace root.
pub const BPF_MANIFEST: &str = "agent-ebpf/programs/Cargo.toml";

/// The host cargo (the one running this xtask), in the workspace root.
pub fn host_cargo(ws: &Workspace) -> Command {
    let mut cmd = Command::new(host_cargo_program());
    cmd.current_dir(&ws.root);
    if env::var_os("CARGO_TARGET_DIR").is_some() {
        // Resolved against our cwd, as the user meant it; the child runs in the root.
        cmd.env("CARGO_TARGET_DIR", ws.target_dir());
    }
    cmd
}

pub fn host_cargo_program() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A Debian toolchain command (`program` is `/usr/bin/...`) with a PATH of `path_dirs` followed
/// by `/usr/bin:/bin` and a scrubbed environment.
pub fn debian(ws: &Workspace, program: &str, path_dirs: &[PathBuf]) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in env::vars_os() {
        let k = key.to_string_lossy();
        if (k.starts_with("CARGO") || k.starts_with("RUST")) && k != "CARGO_HOME" {
            cmd.env_remove(&key);
        }
    }
    let mut path: Vec<PathBuf> = path_dirs.to_vec();
    path.extend([PathBuf::from("/usr/bin"), PathBuf::from("/bin")]);
    cmd.current_dir(&ws.root)
        .env("PATH", env::join_paths(path).expect("PATH entries contain no ':'"))
        .env("RUSTC", DEBIAN_RUSTC);
    cmd
}

/// Debian's clippy for the eBPF crate, for its own target, in `target/bpf` like the build.
pub fn bpf_clippy(ws: &Workspace) -> Command {
    let mut cmd = debian(ws, DEBIAN_CARGO_CLIPPY, &[ws.tools_bin()]);
    cmd.env("CARGO", DEBIAN_CARGO)
        .env("RUSTC_BOOTSTRAP", BPF_RUSTC_BOOTSTRAP)
        // The same flags as agent/build.rs, so both share one set of dependency artifacts.
        .env("RUSTFLAGS", "-Cdebuginfo=2 -Clink-arg=--btf")
        .env("CARGO_TARGET_DIR", ws.bpf_target_dir())
        .arg("clippy")
        .arg("--manifest-path")
        .arg(ws.root.join(BPF_MANIFEST))
        .args(["--locked", "--target", BPF_TARGET, "--release"]);
    cmd
}
