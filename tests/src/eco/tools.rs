//! Finding the external tools: `$MMUSCOPE_<TOOL>` wins, else the PATH (schemathesis: else the venv the eco tier makes
//! under `target/eco/venv`).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// A tool by name, from `env` or the PATH.
pub fn find(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Every tool of `names` (`(binary, env var)`), or one error listing all the missing ones.
pub fn require(names: &[(&str, &str)]) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for (name, env) in names {
        match find(name, env) {
            Some(p) => found.push(p),
            None => missing.push(format!("{name} (PATH or ${env})")),
        }
    }
    if !missing.is_empty() {
        bail!("missing tools: {}; `cargo xtask test --tier eco` installs them", missing.join(", "));
    }
    Ok(found)
}

/// schemathesis: `$MMUSCOPE_SCHEMATHESIS`, else `<workspace>/target/eco/venv/bin/schemathesis`, else the PATH.
pub fn schemathesis() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/eco/venv/bin/schemathesis");
    find("schemathesis", "MMUSCOPE_SCHEMATHESIS").or_else(|| is_executable(&venv).then_some(venv))
}

/// A fresh, empty directory under the system temp dir, named for the test.
pub fn scratch_dir(name: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("mmuscope-eco-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
