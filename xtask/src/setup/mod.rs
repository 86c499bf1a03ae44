//! The installer behind `cargo xtask setup`, also run (for the groups they need) by `build`,
//! `run` and `test`: Debian packages through apt, then bpf-linker into the tools dir.
//!
//! Idempotent: it reports what is present and installs only what is missing (`apt-get update`
//! only when a package is missing). Never downloads rustup components.

mod apt;
mod bpf_linker;
mod packages;

use anyhow::{Result, bail};

pub use packages::Group;
use packages::Package;

use crate::{privilege::Privilege, progress, workspace::Workspace};

/// The group whose builds link with bpf-linker.
const BPF_LINKER_GROUP: Group = Group::EbpfBuild;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Install what is missing.
    Install,
    /// Only report; an error if anything is missing.
    Check,
}

/// What is missing for a set of groups.
struct Missing {
    packages: Vec<&'static Package>,
    /// bpf-linker is needed and absent or of another version.
    linker: bool,
}

impl Missing {
    fn is_empty(&self) -> bool {
        self.packages.is_empty() && !self.linker
    }

    fn names(&self) -> Vec<&'static str> {
        let linker = self.linker.then_some("bpf-linker");
        self.packages.iter().map(|p| p.name).chain(linker).collect()
    }
}

/// Sets up (or checks) `groups`.
pub fn setup(ws: &Workspace, groups: &[Group], mode: Mode) -> Result<()> {
    let mut groups = groups.to_vec();
    groups.sort();
    groups.dedup();
    let names: Vec<_> = groups.iter().map(|g| g.name()).collect();
    say(format!("checking {}", names.join(", ")));

    let missing = survey(ws, &groups)?;
    if missing.is_empty() {
        say("everything present");
        return Ok(());
    }
    if mode == Mode::Check {
        bail!("the set-up is incomplete, missing: {}; run `cargo xtask setup`", missing.names().join(" "));
    }
    if !missing.packages.is_empty() {
        install_packages(&missing.packages)?;
    }
    if missing.linker {
        install_linker(ws)?;
    }
    say("done");
    Ok(())
}

/// Reports what is present and returns what is missing.
fn survey(ws: &Workspace, groups: &[Group]) -> Result<Missing> {
    let wanted: Vec<&Package> = packages::for_groups(groups).collect();
    let names: Vec<&str> = wanted.iter().map(|p| p.name).collect();
    let installed = apt::installed(&names)?;
    let (present, missing): (Vec<&Package>, Vec<&Package>) =
        wanted.into_iter().partition(|p| installed.contains(p.name));
    if !present.is_empty() {
        let names: Vec<_> = present.iter().map(|p| p.name).collect();
        say(format!("Debian packages present: {}", names.join(" ")));
    }
    for p in &missing {
        say(format!("Debian package missing: {} ({}: {})", p.name, p.group.name(), p.why));
    }

    let mut linker = false;
    if groups.contains(&BPF_LINKER_GROUP) {
        let at = ws.display(&bpf_linker::path(ws));
        match bpf_linker::installed_version(ws) {
            Some(v) if v == bpf_linker::VERSION => say(format!("bpf-linker {v} present ({at})")),
            Some(v) => {
                say(format!("bpf-linker {v} found at {at}, {} needed", bpf_linker::VERSION));
                linker = true;
            }
            None => {
                say(format!("bpf-linker missing ({at}); it links the eBPF programs"));
                linker = true;
            }
        }
    }
    Ok(Missing { packages: missing, linker })
}

fn install_packages(missing: &[&Package]) -> Result<()> {
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    let privilege = Privilege::current();
    if !privilege.is_root() {
        bail!(
            "missing Debian packages: {list}. Installing them needs root: run \
             `sudo -E cargo xtask setup` (if sudo resets PATH: `sudo -E env \"PATH=$PATH\" cargo \
             xtask setup`), or `sudo apt-get install --no-install-recommends {list}`",
            list = names.join(" ")
        );
    }
    say(format!("running apt-get update ({} package(s) missing)", names.len()));
    apt::update()?;
    say(format!("installing with apt-get: {}", names.join(" ")));
    apt::install(&names)
}

fn install_linker(ws: &Workspace) -> Result<()> {
    say(format!(
        "building bpf-linker {} against LLVM 22 into {}/ with Debian's cargo \
         (from crates.io; takes ~1-2 min on 2 idle cores)",
        bpf_linker::VERSION,
        ws.display(&ws.tools)
    ));
    bpf_linker::install(ws)?;
    match bpf_linker::installed_version(ws) {
        Some(v) if v == bpf_linker::VERSION => {
            say(format!("bpf-linker {v} installed ({})", ws.display(&bpf_linker::path(ws))));
            Ok(())
        }
        other => bail!(
            "`{} --version` reports {other:?} after the install, expected {}",
            bpf_linker::path(ws).display(),
            bpf_linker::VERSION
        ),
    }
}

fn say(message: impl std::fmt::Display) {
    progress::say("setup", message);
}
