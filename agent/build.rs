//! Builds the eBPF programs (`agent-ebpf/programs`) for `bpfel-unknown-none` with Debian's
//! rustc-web toolchain and bpf-linker, and hands the object to `src/ebpf_object.rs`.
//!
//! The outer build may run under rustup's cargo; the inner one must not see rustup at all
//! (it would pick a rustc without a bpf `core`), so PATH and the cargo environment are reset.
//! `cargo xtask setup` installs what is needed; this script only says so when it is missing.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    let programs = workspace.join("agent-ebpf/programs");
    let tools = env::var_os("MMUSCOPE_TOOLS_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join(".tools"));
    println!("cargo:rerun-if-env-changed=MMUSCOPE_TOOLS_DIR");
    for dir in ["agent-ebpf/programs/src", "agent-ebpf/abi/src"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    for file in ["agent-ebpf/programs/Cargo.toml", "agent-ebpf/programs/Cargo.lock", "agent-ebpf/abi/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", workspace.join(file).display());
    }

    let linker = tools.join("bin/bpf-linker");
    let missing: Vec<String> = [Path::new("/usr/bin/rustc"), Path::new("/usr/bin/cargo"), &linker]
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .chain(
            (!Path::new("/usr/lib/rustlib/bpfel-unknown-none/lib").exists())
                .then(|| "/usr/lib/rustlib/bpfel-unknown-none (libstd-rust-web-dev-bpf)".to_string()),
        )
        .collect();
    if !missing.is_empty() {
        panic!("the eBPF toolchain is incomplete (missing: {}). Run `cargo xtask setup` first.", missing.join(", "));
    }

    // A target dir of its own: the outer cargo holds the lock on the workspace's target/.
    let target_dir = workspace.join("target/bpf");
    let mut cmd = Command::new("/usr/bin/cargo");
    for (key, _) in env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO") || k.starts_with("RUST") || k == "PATH" {
            cmd.env_remove(&key);
        }
    }
    let path = format!("{}:/usr/bin:/bin", tools.join("bin").display());
    cmd.current_dir(&programs)
        .env("PATH", path)
        .env("RUSTC", "/usr/bin/rustc")
        // aya-ebpf needs `asm_experimental_arch`; scope the bootstrap to that crate only.
        .env("RUSTC_BOOTSTRAP", "aya_ebpf")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Cdebuginfo=2\x1f-Clink-arg=--btf")
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["build", "--release", "--locked", "--target", "bpfel-unknown-none"]);
    if let Some(home) = env::var_os("CARGO_HOME") {
        cmd.env("CARGO_HOME", home);
    }
    let status = cmd.status().expect("failed to spawn /usr/bin/cargo for the eBPF build");
    assert!(status.success(), "eBPF build failed ({status}); see the output above");

    let object = target_dir.join("bpfel-unknown-none/release/mmuscope");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("mmuscope.bpf.o");
    std::fs::copy(&object, &out).expect("copy eBPF object");
}
