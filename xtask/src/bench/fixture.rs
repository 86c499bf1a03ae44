//! `mmuscope-bench-fixture` (tests crate) as a background process: the floor programs, or N cgroups with counts in
//! a running agent's map. The floor's hooks are the agent's own: whatever `mmuscope check --mode tracepoint --json`
//! attaches on this kernel (its probe table, resolved), so the floor follows every change to the table.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Bench;
use super::procs::Background;

/// The hooks the agent attaches in tracepoint mode here.
#[derive(Debug, Default, PartialEq)]
pub struct Hooks {
    /// `tp_btf` tracepoint names.
    pub tp_btf: Vec<String>,
    /// Classic tracepoints, `group:name`.
    pub tracepoints: Vec<String>,
}

impl Hooks {
    /// Asks the agent (`check` loads and attaches its plan, then detaches on exit).
    pub fn of_agent(b: &Bench) -> Result<Self> {
        let out = Command::new("taskset")
            .arg("-c")
            .arg(b.other_cpu.to_string())
            .arg(&b.bins.agent)
            .args(["check", "--mode", "tracepoint", "--json"])
            .output()
            .context("running mmuscope check")?;
        if !out.status.success() {
            bail!("mmuscope check --mode tracepoint failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        Self::from_plan(&serde_json::from_slice(&out.stdout).context("parsing mmuscope check --json")?)
    }

    /// The `hooks` of every attached alternative. The subscriber sweep (`iter`) is left out: the agent runs it itself,
    /// at scrape time, never on a path of the measured process. So are the hooks attached only while some mm has the
    /// has-pinned flag (`"on_demand": "while_pinned"`): no benchmark process pins a page, so the agent has them
    /// detached. (Tracepoint mode has no hook attached only while some mm has subscriptions.)
    fn from_plan(plan: &serde_json::Value) -> Result<Self> {
        let mut hooks = Self::default();
        let attached = plan["families"]
            .as_array()
            .context("no families in the plan")?
            .iter()
            .flat_map(|f| f["alternatives"].as_array().into_iter().flatten())
            .filter(|a| a["status"] == "attached");
        for h in attached.flat_map(|a| a["hooks"].as_array().into_iter().flatten()) {
            if h["on_demand"] == "while_pinned" {
                continue;
            }
            let target = h["target"].as_str().context("a hook without a target")?.to_owned();
            let list = match h["hook"].as_str() {
                Some("tp_btf") => &mut hooks.tp_btf,
                Some("tracepoint") => &mut hooks.tracepoints,
                Some("iter") => continue,
                other => bail!("the floor has no empty program for a {other:?} hook ({target})"),
            };
            if !list.contains(&target) {
                list.push(target);
            }
        }
        if hooks.tp_btf.is_empty() && hooks.tracepoints.is_empty() {
            bail!("the agent attached no hook in tracepoint mode");
        }
        Ok(hooks)
    }

    /// `tp_btf/NAME, tracepoint/GROUP:NAME, …`
    pub fn describe(&self) -> String {
        let tp_btf = self.tp_btf.iter().map(|t| format!("tp_btf/{t}"));
        tp_btf.chain(self.tracepoints.iter().map(|t| format!("tracepoint/{t}"))).collect::<Vec<_>>().join(", ")
    }
}

/// Empty programs on `hooks`; with `count_on`, the per-cgroup count program instead on that `tp_btf` hook.
pub fn floor(b: &Bench, hooks: &Hooks, count_on: Option<&str>) -> Result<Background> {
    // The floor attaches classic tracepoints, like bpftrace, and cannot mount tracefs itself.
    let mut cmd = crate::process::with_tracefs(&b.bins.fixture);
    cmd.arg("floor").arg("--object").arg(&b.bins.bpf_object);
    for t in &hooks.tp_btf {
        cmd.args(["--tp-btf", t]);
    }
    for t in &hooks.tracepoints {
        cmd.args(["--tracepoint", t]);
    }
    if let Some(c) = count_on {
        cmd.args(["--count-on", c]);
    }
    Background::until_line(cmd, "the floor fixture", "ready", Duration::from_secs(60), true)
}

pub fn cgroups(b: &Bench, agent_pid: u32, count: usize) -> Result<Background> {
    let mut cmd = Command::new(&b.bins.fixture);
    cmd.args(["cgroups", "--agent-pid", &agent_pid.to_string(), "--count", &count.to_string()]);
    Background::until_line(cmd, "the cgroups fixture", "ready", Duration::from_secs(300), true)
}

#[cfg(test)]
mod tests {
    use super::Hooks;

    #[test]
    fn hooks_come_from_attached_alternatives_only() {
        let plan = serde_json::json!({"families": [
            {"alternatives": [
                {"status": "excluded", "hooks": [{"hook": "fentry", "target": "f"}]},
                {"status": "attached", "hooks": [{"hook": "tp_btf", "target": "kvm_unmap_hva_range"}]},
            ]},
            {"alternatives": [{"status": "attached", "hooks": [
                {"hook": "tracepoint", "target": "syscalls:sys_enter_clone"},
                {"hook": "tracepoint", "target": "syscalls:sys_enter_clone"},
                {"hook": "tp_btf", "target": "mm_page_alloc"},
                {"hook": "tp_btf", "target": "sched_switch", "on_demand": "while_pinned"},
            ]}]},
            {"alternatives": [{"status": "attached", "hooks": [{"hook": "iter", "target": "task"}]}]},
        ]});
        let hooks = Hooks::from_plan(&plan).unwrap();
        assert_eq!(hooks.tp_btf, ["kvm_unmap_hva_range", "mm_page_alloc"]);
        assert_eq!(hooks.tracepoints, ["syscalls:sys_enter_clone"]);
        assert_eq!(
            hooks.describe(),
            "tp_btf/kvm_unmap_hva_range, tp_btf/mm_page_alloc, tracepoint/syscalls:sys_enter_clone"
        );
        let kprobe = serde_json::json!({"families": [{"alternatives": [
            {"status": "attached", "hooks": [{"hook": "kprobe", "target": "f"}]}]}]});
        assert!(Hooks::from_plan(&kprobe).is_err());
    }
}
