//! Where things are: the workspace root, the project tools dir (`.tools/`, or
//! `$MMUSCOPE_TOOLS_DIR`) and the target dirs, including `target/bpf` for the eBPF crate.

use std::{
    env,
    path::{Path, PathBuf},
};

/// Overrides the tools dir; `agent/build.rs` reads the same variable.
pub const TOOLS_DIR_ENV: &str = "MMUSCOPE_TOOLS_DIR";

pub struct Workspace {
    pub root: PathBuf,
    /// Where setup installs tools built from the crate registry (`<tools>/bin/bpf-linker`).
    pub tools: PathBuf,
}

/// A cargo build profile, named as in `target/<dir>`.
#[derive(Clone, Copy)]
pub enum Profile {
    Debug,
    Release,
}

impl Workspace {
    pub fn locate() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives one level below the workspace root")
            .to_path_buf();
        let tools = match env::var_os(TOOLS_DIR_ENV) {
            Some(dir) => absolute(&root, PathBuf::from(dir)),
            None => root.join(".tools"),
        };
        Self { root, tools }
    }

    pub fn tools_bin(&self) -> PathBuf {
        self.tools.join("bin")
    }

    /// The host target dir: `$CARGO_TARGET_DIR` if set, else `<root>/target`.
    pub fn target_dir(&self) -> PathBuf {
        match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => absolute(&env::current_dir().unwrap_or_default(), PathBuf::from(dir)),
            None => self.root.join("target"),
        }
    }

    /// The eBPF crate's target dir; the same one `agent/build.rs` uses.
    pub fn bpf_target_dir(&self) -> PathBuf {
        self.root.join("target/bpf")
    }

    /// The path of a host binary built with `profile`.
    pub fn binary(&self, profile: Profile, name: &str) -> PathBuf {
        let dir = match profile {
            Profile::Debug => "debug",
            Profile::Release => "release",
        };
        self.target_dir().join(dir).join(name)
    }

    /// `path` relative to the root when it is inside it, for shorter messages.
    pub fn display(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).display().to_string()
    }
}

fn absolute(base: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() { path } else { base.join(path) }
}
