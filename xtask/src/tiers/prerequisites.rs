//! What the tiers that run the agent on this machine (`host`, `eco`, `ship`) need: root, `/dev/kvm` and kernel BTF.

use std::{fs::OpenOptions, path::Path};

use anyhow::{Result, bail};

use super::{Context, Outcome};
use crate::privilege::Privilege;

/// `Some(Skipped)` when root or /dev/kvm is missing outside CI; an error in CI, where a missing
/// prerequisite must never pass as a skip; `None` when everything is there.
pub(super) fn unmet_prerequisites(ctx: &Context) -> Result<Option<Outcome>> {
    let missing = missing_prerequisites();
    if missing.is_empty() {
        return Ok(None);
    }
    let reason = missing.join("; ");
    if ctx.ci {
        bail!("prerequisite missing in CI: {reason}");
    }
    Ok(Some(Outcome::Skipped(reason)))
}

fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    let privilege = Privilege::current();
    if !privilege.is_root() {
        missing.push(format!("not root (euid {}); run `sudo -E cargo xtask test --tier host`", privilege.euid));
    }
    if let Err(err) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        missing.push(format!("cannot open /dev/kvm ({err})"));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        missing.push("no kernel BTF at /sys/kernel/btf/vmlinux".into());
    }
    missing
}
