//! The OCI image (`deploy/container/Containerfile`), built with Debian's buildah from the Debian package the `deb`
//! step made, then run with podman the way the DaemonSet runs it ([`SCRIPT`] reads its capabilities, mounts,
//! security context and limits from the rendered kustomization) on this host's kernel: it must become ready, count a
//! workload in a Kubernetes pod's cgroup exactly (with the pod's labels), and hold no capability once attached.
//!
//! No registry is reachable here, so the Containerfile's `BASE` is a local bookworm image made with mmdebstrap from
//! the Debian archive apt already uses, imported once into the tier's container storage under `.tools/ship/` and
//! reused. Storage is `vfs` and the runtime runc with cgroupfs: crun refuses this host's hybrid cgroup layout, and
//! the default RLIMIT_NOFILE cannot be raised here, so the container gets explicit limits.
//!
//! Seccomp: the DaemonSet asks for `RuntimeDefault`. Current containerd and CRI-O defaults allow bpf(2) to holders
//! of CAP_BPF and perf_event_open(2) to holders of CAP_PERFMON; the profile podman ships in bookworm predates that
//! and allows both only with CAP_SYS_ADMIN. The test runs podman's profile with just those two rules added, the
//! RuntimeDefault the DaemonSet gets on a current runtime (and docs/hardening.md says which runtimes refuse it).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{daemon, http, kubepod, say, tools::Tools};
use crate::{process, workspace::Workspace};

const CONTAINERFILE: &str = "deploy/container/Containerfile";
const SCRIPT: &str = include_str!("scripts/daemonset_podman.py");
const BASE: &str = "localhost/mmuscope-base:bookworm";
const IMAGE: &str = "localhost/mmuscope:ship";
const PODMAN_SECCOMP: &str = "/usr/share/containers/seccomp.json";
const ITERATIONS: u64 = 500;

/// podman's and buildah's common options: the tier's own storage, and what works on this host.
struct Storage {
    root: PathBuf,
    runroot: PathBuf,
}

impl Storage {
    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        cmd.arg("--root").arg(&self.root).arg("--runroot").arg(&self.runroot).args(["--storage-driver", "vfs"]);
        if tool == "podman" {
            cmd.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        }
        cmd
    }
}

/// Explicit limits: the runtime's default RLIMIT_NOFILE (1048576) is above this host's hard limit.
const ULIMITS: [&str; 4] = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"];

pub fn check(ws: &Workspace, tools: &Tools, workload: &Path) -> Result<()> {
    let dir = ws.target_dir().join("ship/image");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let storage = Storage { root: ws.tools.join("ship/containers"), runroot: dir.join("run") };
    ensure_base(&storage, &ws.tools.join("ship"))?;

    let deb = fs::read_dir(ws.target_dir().join("debian"))
        .context("no target/debian: the Debian package step builds the .deb the image is made from")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("no .deb in target/debian")?;
    let context = dir.join("context");
    fs::create_dir_all(&context)?;
    fs::copy(&deb, context.join(deb.file_name().context("deb name")?))?;
    let mut build = storage.command("buildah");
    build.args(["bud", "--runtime", "runc", "--network", "none", "--layers=false"]).args(ULIMITS);
    build
        .args(["--build-arg", &format!("BASE={BASE}"), "-t", IMAGE, "-f"])
        .arg(ws.root.join(CONTAINERFILE))
        .arg(&context);
    process::run(&mut build)?;
    let size = capture(storage.command("podman").args(["image", "inspect", "--format", "{{.Size}}", IMAGE]))?;
    let size: f64 = size.trim().parse().unwrap_or(0.0);
    say(format!("{IMAGE}: {:.1} MB, built from {}", size / 1e6, ws.display(&deb)));

    let rendered = dir.join("rendered.yaml");
    let out = process::capture(Command::new("kubectl").arg("kustomize").arg(ws.root.join("deploy/kubernetes")))?;
    if !out.status.success() {
        bail!("kubectl kustomize: {}", String::from_utf8_lossy(&out.stderr));
    }
    fs::write(&rendered, &out.stdout)?;
    let pod = kubepod::Pod::create(&dir)?;
    let seccomp = dir.join("seccomp.json");
    fs::write(&seccomp, serde_json::to_string_pretty(&runtime_default(&fs::read_to_string(PODMAN_SECCOMP)?)?)?)?;
    let script = dir.join("daemonset_podman.py");
    fs::write(&script, SCRIPT)?;
    let translated =
        capture(Command::new(&tools.python).arg(&script).arg(&rendered).arg(&dir).arg(&pod.host_root).arg(&seccomp))?;
    let mut lines = translated.lines();
    let run_args: Vec<String> = serde_json::from_str(lines.next().context("podman arguments")?)?;
    let container_args: Vec<String> = serde_json::from_str(lines.next().context("container arguments")?)?;
    say(format!("the DaemonSet as podman arguments: {}", run_args.join(" ")));

    let addr = daemon::free_port()?;
    let name = format!("mmuscope-ship-{}", std::process::id());
    let mut run = storage.command("podman");
    run.args(["run", "-d", "--name", &name, "--network", "host"]).args(ULIMITS).args(&run_args).arg(IMAGE);
    run.args(&container_args).arg(format!("--web.listen-address={addr}"));
    let id = capture(&mut run)?;
    say(format!(
        "container {} started: {IMAGE} {}",
        id.trim().chars().take(12).collect::<String>(),
        container_args.join(" ")
    ));
    let result = (|| -> Result<()> {
        let ready = daemon::wait_for("the container's /readyz", Duration::from_secs(60), || {
            let state = capture(storage.command("podman").args(["inspect", "--format", "{{.State.Status}}", &name]))?;
            if state.trim() != "running" {
                bail!("the container is {}", state.trim());
            }
            Ok(http::get(&format!("http://{addr}/readyz"), &[]).ok().filter(|(c, _)| *c == 200))
        })?;
        say(format!("/readyz 200: {}", ready.1.trim()));
        let pid: u32 = capture(storage.command("podman").args(["inspect", "--format", "{{.State.Pid}}", &name]))?
            .trim()
            .parse()
            .context("the container's pid")?;
        let threads = daemon::require_no_capabilities(pid)?;
        let caps = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let caps: Vec<&str> = caps.lines().filter(|l| l.starts_with("Cap")).collect();
        say(format!("grep Cap /proc/{pid}/status (the agent, pid 1 in the container): {}", caps.join("; ")));
        say(format!("no capability on any of its {threads} threads"));
        count_exactly(&pod, workload, addr)
    })();
    let logs = capture(storage.command("podman").args(["logs", &name])).unwrap_or_default();
    let removed = process::capture(storage.command("podman").args(["rm", "-f", &name]));
    let cleanup =
        process::capture(Command::new(workload).args(["cleanup-cgroup", "--path", &pod.cgroup(), "--prune-parents"]));
    if let Err(e) = result {
        let tail: Vec<&str> = logs.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{e:#}\ncontainer log:\n{}", tail.join("\n"));
    }
    removed?;
    cleanup?;
    Ok(())
}

/// kvm-madvise in the pod's cgroup: the container's agent must count exactly the workload's KVM callbacks, under
/// the pod's namespace, pod and container labels.
fn count_exactly(pod: &kubepod::Pod, workload: &Path, addr: std::net::SocketAddr) -> Result<()> {
    let out = process::capture(
        Command::new(workload).args(["kvm-madvise", "--iterations", &ITERATIONS.to_string()]).args([
            "--cgroup-parent",
            &pod.parent,
            "--cgroup-name",
            &pod.name,
        ]),
    )?;
    if !out.status.success() {
        bail!("kvm-madvise: {}", String::from_utf8_lossy(&out.stderr));
    }
    let truth: Value = serde_json::from_slice(&out.stdout).context("the workload's ground truth")?;
    let expected =
        truth["invalidations"]["kvm_unmap_hva_range"].as_u64().context("invalidations.kvm_unmap_hva_range")?;
    let cgroup = pod.cgroup();
    let want_labels = [
        format!("namespace=\"{}\"", kubepod::NAMESPACE),
        format!("pod=\"{}\"", kubepod::POD),
        format!("container=\"{}\"", kubepod::CONTAINER),
    ];
    let (got, line) = daemon::wait_for("the workload's count", Duration::from_secs(15), || {
        let metrics = http::get_ok(&format!("http://{addr}/metrics"))?;
        let lines: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("mmuscope_invalidations_total{") && l.contains(&format!("cgroup=\"{cgroup}\"")))
            .collect();
        let sum: f64 = lines.iter().filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok()).sum();
        Ok((sum as u64 == expected).then(|| (sum as u64, lines.first().map(|l| l.to_string()).unwrap_or_default())))
    })
    .with_context(|| format!("the container's agent never counted {expected} invalidations for {cgroup}"))?;
    if let Some(missing) = want_labels.iter().find(|l| !line.contains(l.as_str())) {
        bail!("the series lacks {missing}: {line}");
    }
    say(format!(
        "kvm-madvise --iterations {ITERATIONS} in the pod: ground truth {expected}, the container's agent {got}: {line}"
    ));
    Ok(())
}

/// podman's default seccomp profile with bpf(2) allowed to CAP_BPF and perf_event_open(2) to CAP_PERFMON, as in the
/// RuntimeDefault of current containerd and CRI-O.
fn runtime_default(podman_default: &str) -> Result<Value> {
    let mut profile: Value = serde_json::from_str(podman_default).context("podman's seccomp profile")?;
    let syscalls = profile["syscalls"].as_array_mut().context("syscalls")?;
    for (name, cap) in [("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")] {
        // Out of the rule that refuses it to everyone without CAP_SYS_ADMIN (the default action still refuses it).
        for rule in syscalls.iter_mut().filter(|r| r["action"] == "SCMP_ACT_ERRNO") {
            if let Some(names) = rule["names"].as_array_mut() {
                names.retain(|n| n != name);
            }
        }
        syscalls.push(json!({"names": [name], "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}}));
    }
    Ok(profile)
}

/// The local Debian base image, made once (mmdebstrap, minbase) and kept in the tier's container storage.
fn ensure_base(storage: &Storage, cache: &Path) -> Result<()> {
    let exists = storage.command("podman").args(["image", "exists", BASE]).status()?;
    if exists.success() {
        say(format!("base image {BASE} present"));
        return Ok(());
    }
    let mirror = crate::vm::debian_mirror()?;
    let tar = cache.join("mmuscope-base-bookworm.tar");
    say(format!("making the base image {BASE}: mmdebstrap --variant=minbase bookworm from {mirror} (~1 min)"));
    process::run(Command::new("mmdebstrap").args(["--variant=minbase", "--quiet", "bookworm"]).arg(&tar).arg(&mirror))?;
    process::run(storage.command("podman").arg("import").arg(&tar).arg(BASE))?;
    fs::remove_file(&tar)?;
    Ok(())
}

/// stdout of a command that must succeed.
fn capture(cmd: &mut Command) -> Result<String> {
    let out = process::capture(cmd)?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", process::describe(cmd), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_default_allows_bpf_and_perf_event_open_to_their_capabilities() {
        let podman = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["bpf", "perf_event_open", "quotactl"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["bpf", "perf_event_open", "quotactl"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#;
        let p = runtime_default(podman).unwrap();
        let rules = p["syscalls"].as_array().unwrap();
        assert_eq!(rules[1]["names"], json!(["quotactl"]));
        assert_eq!(rules[0]["names"], json!(["bpf", "perf_event_open", "quotactl"]), "CAP_SYS_ADMIN keeps both");
        assert_eq!(rules[2], json!({"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_BPF"]}}));
        assert_eq!(rules[3]["includes"]["caps"], json!(["CAP_PERFMON"]));
    }
}
