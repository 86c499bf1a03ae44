//! Where the binaries under test are: an environment variable wins, else the cargo build output.

use std::path::PathBuf;

/// Env var naming the agent binary.
pub const AGENT_BIN_ENV: &str = "MMUSCOPE_AGENT_BIN";
/// Env var naming the workload binary.
pub const WORKLOAD_BIN_ENV: &str = "MMUSCOPE_WORKLOAD_BIN";

/// The agent: `$MMUSCOPE_AGENT_BIN`, else `mmuscope` in this test's cargo profile directory (the test executable
/// runs from `<target>/<profile>/deps/`, so this is `<workspace>/target/debug/mmuscope` in a default debug build and
/// follows `CARGO_TARGET_DIR`/`--release` too).
pub fn agent_bin() -> PathBuf {
    from_env(AGENT_BIN_ENV).unwrap_or_else(|| profile_dir().join("mmuscope"))
}

/// The workload: `$MMUSCOPE_WORKLOAD_BIN`, else `cargo_default` (pass `env!("CARGO_BIN_EXE_mmuscope-workload")`, which
/// only integration tests can see).
pub fn workload_bin(cargo_default: &str) -> PathBuf {
    from_env(WORKLOAD_BIN_ENV).unwrap_or_else(|| PathBuf::from(cargo_default))
}

fn from_env(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// `<target>/<profile>` for the running test executable; falls back to `target/debug` under the workspace.
fn profile_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let deps = exe.parent()?;
            (deps.file_name()? == "deps").then(|| deps.parent().map(PathBuf::from))?
        })
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"))
}
