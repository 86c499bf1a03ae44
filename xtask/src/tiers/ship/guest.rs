//! Samples from stock Debian kernels under QEMU, for the dashboard families this machine's kernel cannot
//! produce: it refuses fentry and has no kprobes, so latency histograms, secondary-TLB invalidations and double
//! notifications only exist in a guest (the `vm` tier's harness, `crate::vm`). Two guests, one per generation
//! ([`PRE_66`], [`POST_66`]): 6.1, where KVM still implements `->invalidate_range` and double notifications happen
//! with KVM VMs; and Debian 12's 6.12, where KVM implements no `arch_invalidate_secondary_tlbs`, so the 6.6+ figures
//! (secondary-TLB calls by context including whole-mm ones, `overlapping_secondary_tlb`) need the test module's
//! secondary-TLB subscriber (`--subscriber sectlb`, the module built as for the `vm` tier).
//!
//! The guest runs `scripts/guest.sh`: the agent in fentry mode, the workloads, and a dump of `/metrics` every two
//! seconds headed by the guest's uptime. The guest has no network to scrape through, so the dumps become OpenMetrics
//! samples on the host's clock (the uptime of the last line is the moment QEMU exited, ±1 s) and are backfilled
//! into the tier's Prometheus with `promtool tsdb create-blocks-from openmetrics`, as instance
//! `<release>-guest:9476`. The host agent is scraped live; the report says which queries only the guest answered.

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};

use crate::{
    tiers::vm::MIRROR_MODULE,
    vm::{self, GuestOptions, initramfs::GuestFile},
    workspace::Workspace,
};

/// One guest of the tier: its kernel and whether it runs the secondary-TLB subscriber's scenarios (`guest.sh`'s
/// `sectlb` set) instead of the KVM ones.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub kernel: &'static str,
    pub sectlb: bool,
    /// Seconds of workloads.
    pub duration: &'static str,
}

/// The pre-6.6 generation with KVM VMs.
pub const PRE_66: Spec = Spec { kernel: "6.1", sectlb: false, duration: "40" };
/// The 6.6+ generation with the test module's subscriber: the `vm` tier's 6.12 (Debian 12's build, which the module
/// builds for with this host's gcc). It starts later and only has to produce a few rounds of four scenarios; the
/// interval notifier's (`mirror-collide`, the dashboards' GPU/RDMA row) is the last of a round, so a rate needs a
/// second round (20 s gave one when the agent's scrapes were slow).
pub const POST_66: Spec = Spec { kernel: "linux-image-6.12-amd64", sectlb: true, duration: "30" };
const SCRIPT: &str = include_str!("scripts/guest.sh");
/// Seconds between dumps.
const INTERVAL: &str = "2";

pub struct GuestSamples {
    pub instance: String,
    /// The samples as an OpenMetrics text, ready for promtool.
    pub openmetrics: String,
    /// Unix time of the first and the last dump.
    pub first: f64,
    pub last: f64,
    pub dumps: usize,
    /// The agent's log line about dropping capabilities.
    pub privileges: String,
}

/// Boots the guest of `spec`, runs the workloads, returns its samples (blocking, ~70 s under TCG).
pub fn run(ws: &Workspace, agent: &Path, workload: &Path, spec: Spec) -> Result<GuestSamples> {
    let kernel = vm::kernel(ws, &spec.kernel.parse()?)?;
    // One copy per guest: the two guests are built at the same time.
    let script = ws.target_dir().join(format!("ship/guest-{}.sh", kernel.meta.release));
    fs::create_dir_all(ws.target_dir().join("ship"))?;
    fs::write(&script, SCRIPT)?;
    let mut files = vec![
        GuestFile { host: agent.to_path_buf(), guest: "/usr/bin/mmuscope".into() },
        GuestFile { host: workload.to_path_buf(), guest: "/usr/bin/mmuscope-workload".into() },
        GuestFile { host: script, guest: "/usr/bin/ship-guest.sh".into() },
    ];
    let set = if spec.sectlb {
        let ko = vm::kmod::build(ws, &kernel, vm::kmod::MIRROR)
            .map_err(|why| anyhow::anyhow!("the test module for {}: {why}", kernel.meta.release))?;
        files.push(GuestFile { host: ko, guest: MIRROR_MODULE.into() });
        "sectlb"
    } else {
        "kvm"
    };
    let command = ["sh", "/usr/bin/ship-guest.sh", spec.duration, INTERVAL, set].map(String::from);
    let opts = GuestOptions {
        label: "ship".into(),
        memory_mib: 2048,
        // One vCPU, as in the vm tier: two occasionally soft-lock under multi-threaded TCG.
        cpus: 1,
        timeout: Duration::from_secs(300),
        echo: None,
    };
    let done = vm::run_in_guest(ws, &kernel, &files, &command, &opts)?;
    let ended = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    // Kept for a failure's post-mortem: the dumps and, at the end, the agent's and the workloads' logs.
    let log = ws.target_dir().join(format!("ship/guest-{}.log", kernel.meta.release));
    fs::write(&log, &done.output).with_context(|| format!("writing {}", log.display()))?;
    if done.status != 0 {
        let tail: Vec<&str> = done.output.lines().rev().take(30).collect();
        bail!(
            "the guest script exited with {}:\n{}",
            done.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let instance = format!("{}-guest:9476", kernel.meta.release);
    to_openmetrics(&done.output, &instance, ended)
}

/// The dumps of `output` as OpenMetrics: one block of samples per metric name (OpenMetrics does not allow a
/// family's samples to be interleaved with another's), with `job` and `instance` as a scrape would add them.
pub fn to_openmetrics(output: &str, instance: &str, ended: f64) -> Result<GuestSamples> {
    let done = output.lines().find_map(|l| l.strip_prefix("MMUSCOPE-SHIP-DONE ")).context("no DONE line")?;
    let done: f64 = done.split_whitespace().next().unwrap_or_default().parse()?;
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let (mut at, mut first, mut last, mut dumps) = (None, f64::MAX, 0f64, 0);
    for line in output.lines() {
        if let Some(uptime) = line.strip_prefix("MMUSCOPE-SHIP-DUMP ") {
            let t = ended - (done - uptime.trim().parse::<f64>()?);
            (first, last, dumps) = (first.min(t), last.max(t), dumps + 1);
            at = Some(t);
        } else if line == "MMUSCOPE-SHIP-END" {
            at = None;
        } else if let Some(t) = at {
            let (series, value) = line.rsplit_once(' ').with_context(|| format!("sample line {line:?}"))?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, format!(",{}", rest.trim_end_matches('}'))),
                None => (series, String::new()),
            };
            let labels = format!("{{job=\"mmuscope\",instance=\"{instance}\"{labels}}}");
            by_name.entry(name).or_default().push(format!("{name}{labels} {value} {t:.3}"));
        }
    }
    if dumps < 2 {
        bail!("the guest produced {dumps} dump(s); at least two are needed for rates");
    }
    let privileges = output.lines().find_map(|l| l.strip_prefix("MMUSCOPE-SHIP-AGENT ")).unwrap_or("?").to_string();
    let mut openmetrics: String = by_name.values().flatten().map(|l| format!("{l}\n")).collect();
    openmetrics.push_str("# EOF\n");
    Ok(GuestSamples { instance: instance.to_string(), openmetrics, first, last, dumps, privileges })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_become_timestamped_samples_grouped_by_name() {
        let output = "MMUSCOPE-SHIP-READY 3.0\n\
                      MMUSCOPE-SHIP-DUMP 10.0\n\
                      mmuscope_b_total{cgroup=\"/x\"} 1\nmmuscope_a 5\n\
                      MMUSCOPE-SHIP-END\n\
                      MMUSCOPE-SHIP-DUMP 12.5\n\
                      mmuscope_b_total{cgroup=\"/x\"} 4\nmmuscope_a 6\n\
                      MMUSCOPE-SHIP-END\n\
                      MMUSCOPE-SHIP-DONE 20.0 rounds=1\n";
        let s = to_openmetrics(output, "g:9476", 1000.0).unwrap();
        assert_eq!((s.first, s.last, s.dumps), (990.0, 992.5, 2));
        assert_eq!(
            s.openmetrics,
            "mmuscope_a{job=\"mmuscope\",instance=\"g:9476\"} 5 990.000\n\
             mmuscope_a{job=\"mmuscope\",instance=\"g:9476\"} 6 992.500\n\
             mmuscope_b_total{job=\"mmuscope\",instance=\"g:9476\",cgroup=\"/x\"} 1 990.000\n\
             mmuscope_b_total{job=\"mmuscope\",instance=\"g:9476\",cgroup=\"/x\"} 4 992.500\n# EOF\n"
        );
    }
}
