//! The BPF programs, maps and links a process holds (from `/proc/PID/fdinfo`: `prog_id`, `map_id`, `link_id`), and
//! which of them the kernel still has afterwards (`bpftool -j prog|map|link show`). Ids, not names: other agents
//! with the same program names may run on the same host at the same time.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, Result, bail};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Prog,
    Map,
    Link,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Prog, Kind::Map, Kind::Link];

    fn fdinfo_key(self) -> &'static str {
        match self {
            Kind::Prog => "prog_id:",
            Kind::Map => "map_id:",
            Kind::Link => "link_id:",
        }
    }

    pub fn bpftool(self) -> &'static str {
        match self {
            Kind::Prog => "prog",
            Kind::Map => "map",
            Kind::Link => "link",
        }
    }
}

/// Every (kind, id) that `pid` holds a file descriptor for. (A link's fdinfo also names its program; that one is
/// counted through the program's own fd.)
pub fn held_by(pid: u32) -> Result<BTreeSet<(Kind, u32)>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else { continue };
        let is_link = text.lines().any(|l| l.starts_with("link_id:"));
        for kind in Kind::ALL {
            if is_link && kind == Kind::Prog {
                continue;
            }
            if let Some(id) = text.lines().find_map(|l| l.strip_prefix(kind.fdinfo_key())) {
                out.insert((kind, id.trim().parse().context("bpf id in fdinfo")?));
            }
        }
    }
    Ok(out)
}

/// Every id of `kind` the kernel has now.
pub fn existing(kind: Kind) -> Result<BTreeSet<u32>> {
    let out = Command::new("bpftool").args(["-j", kind.bpftool(), "show"]).output().context("running bpftool")?;
    if !out.status.success() {
        bail!("bpftool {} show: {}", kind.bpftool(), String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("bpftool JSON")?;
    Ok(v.as_array().into_iter().flatten().filter_map(|o| o["id"].as_u64()).map(|id| id as u32).collect())
}

/// Of `held`, those the kernel still has.
pub fn still_present(held: &BTreeSet<(Kind, u32)>) -> Result<Vec<(Kind, u32)>> {
    let mut left = Vec::new();
    for kind in Kind::ALL {
        let now = existing(kind)?;
        left.extend(held.iter().filter(|(k, id)| *k == kind && now.contains(id)).copied());
    }
    Ok(left)
}

/// The names of the maps whose values the program `name`, held by `pid`, still loads after the verifier's dead-code
/// removal (`map[id:N]` operands of `bpftool prog dump xlated`). The program's own map list (`map_ids`) cannot tell:
/// the kernel fills it before verification.
pub fn maps_loaded_by(pid: u32, name: &str) -> Result<BTreeSet<String>> {
    let ids: Vec<u32> = held_by(pid)?.into_iter().filter(|(k, _)| *k == Kind::Prog).map(|(_, id)| id).collect();
    let show = |kind: &str, id: u32| -> Result<serde_json::Value> {
        let out = Command::new("bpftool").args(["-j", kind, "show", "id", &id.to_string()]).output()?;
        if !out.status.success() {
            bail!("bpftool {kind} show id {id}: {}", String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout).context("bpftool JSON")
    };
    let mut prog = None;
    for id in ids {
        if show("prog", id)?["name"].as_str() == Some(name) {
            prog = Some(id);
        }
    }
    let prog = prog.with_context(|| format!("pid {pid} holds no program named {name}"))?;
    let out = Command::new("bpftool").args(["prog", "dump", "xlated", "id", &prog.to_string()]).output()?;
    if !out.status.success() {
        bail!("bpftool prog dump xlated id {prog}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut names = BTreeSet::new();
    for operand in text.split("map[id:").skip(1) {
        let id: u32 = operand.split(']').next().unwrap_or_default().parse().context("map id in xlated code")?;
        let map = show("map", id)?;
        names.insert(map["name"].as_str().context("map without a name")?.to_string());
    }
    Ok(names)
}
