//! Builds the eBPF programs (`agent-ebpf/programs`) for `bpfel-unknown-none` with Debian's
//! rustc-web toolchain and bpf-linker, and hands the object to `src/probes/mod.rs` (`OBJECT`, embedded with
//! `include_bytes_aligned!`).
//!
//! The outer build may run under rustup's cargo; the inner one must not see rustup at all
//! (it would pick a rustc without a bpf `core`), so PATH and the cargo environment are reset.
//! `cargo xtask setup` installs what is needed; this script only says so when it is missing.
//!
//! It also records what `--version` shows: the git revision (`unknown` outside a git checkout, e.g. when built
//! from a crate tarball; git is asked locally, never the network), the build date (`SOURCE_DATE_EPOCH` when set,
//! for reproducible builds), rustc's version and the target.

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
    version_facts(&workspace);
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

/// `cargo:rustc-env` for `src/version.rs`.
fn version_facts(workspace: &Path) {
    let git = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(workspace).args(args).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    // Only this workspace's own repository: a crate tarball unpacked inside another checkout has no revision.
    let ours = git(&["rev-parse", "--show-toplevel"])
        .and_then(|top| Path::new(&top).canonicalize().ok())
        .is_some_and(|top| workspace.canonicalize().is_ok_and(|w| w == top));
    let revision = ours.then(|| git(&["rev-parse", "--short=12", "HEAD"])).flatten();
    if revision.is_some() {
        // Rebuild the strings when HEAD moves: HEAD itself and the branch it points to (worktrees included).
        let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
        watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
        for name in watched {
            if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
                let path = workspace.join(path);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
    }
    println!("cargo:rustc-env=MMUSCOPE_GIT_REVISION={}", revision.as_deref().unwrap_or("unknown"));
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch = env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
    });
    println!("cargo:rustc-env=MMUSCOPE_BUILD_DATE={}", rfc3339(epoch));
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=MMUSCOPE_RUSTC_VERSION={rustc_version}");
    println!("cargo:rustc-env=MMUSCOPE_TARGET={}", env::var("TARGET").unwrap_or_else(|_| "unknown".to_string()));
}

/// Seconds since the epoch → `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(epoch: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(epoch).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (h, m, s) = t.to_hms();
    format!("{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}Z", t.year(), u8::from(t.month()), t.day())
}
