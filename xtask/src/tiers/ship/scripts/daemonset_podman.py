"""The `podman run` arguments that give a container what the DaemonSet gives the agent's pod on a node.

Usage: daemonset_podman.py RENDERED.yaml SCRATCH_DIR HOST_ROOT SECCOMP.json
Prints a JSON list of arguments (before the image name) and then, on a second line, the container's args.

Read from the rendered kustomization, so that a change to the DaemonSet changes what is tested:
* securityContext: runAsUser, capabilities (drop/add), allowPrivilegeEscalation: false (no-new-privileges),
  readOnlyRootFilesystem, privileged must be false; seccompProfile RuntimeDefault becomes SECCOMP.json (see
  image.rs for why it is not podman's own default);
* volumeMounts: hostPath volumes are bind-mounted from the node's path (read-only where the mount is; propagation
  HostToContainer is rslave); paths below /var/log and /var/lib/kubelet are taken below HOST_ROOT instead, where the
  test's Kubernetes pod fixture keeps the kubelet's files; configMap volumes are written to SCRATCH_DIR from the
  rendered ConfigMap and mounted read-only;
* resources.limits (memory, cpu) become --memory and --cpus.
The pod network is not reproduced: the container shares the host's network and the test passes a loopback
--web.listen-address.
"""

import json
import os
import sys

import yaml


def main(rendered, scratch, host_root, seccomp):
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = container.get("securityContext", {})
    if sc.get("privileged"):
        raise SystemExit("the DaemonSet's container is privileged")
    args = []
    if "runAsUser" in sc:
        args += ["--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}"]
    caps = sc.get("capabilities", {})
    for cap in caps.get("drop", []):
        args += ["--cap-drop", cap if cap == "ALL" else f"CAP_{cap}"]
    for cap in caps.get("add", []):
        args += ["--cap-add", f"CAP_{cap}"]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if sc.get("readOnlyRootFilesystem"):
        args += ["--read-only"]
    profile = sc.get("seccompProfile", {}).get("type")
    if profile != "RuntimeDefault":
        raise SystemExit(f"seccompProfile {profile!r}: only RuntimeDefault is translated")
    args += ["--security-opt", f"seccomp={seccomp}"]

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in container.get("volumeMounts", []):
        v = volumes[m["name"]]
        opts = ["ro"] if m.get("readOnly") else ["rw"]
        if m.get("mountPropagation") == "HostToContainer":
            opts.append("rslave")
        if "hostPath" in v:
            src = v["hostPath"]["path"]
            if src.startswith(("/var/log/", "/var/lib/kubelet")):
                src = os.path.join(host_root, src.lstrip("/"))
            if v["hostPath"].get("type") == "DirectoryOrCreate":
                os.makedirs(src, exist_ok=True)
        elif "configMap" in v:
            cm = config_maps[v["configMap"]["name"]]
            src = os.path.join(scratch, "configmap-" + m["name"])
            os.makedirs(src, exist_ok=True)
            for key, text in cm.get("data", {}).items():
                with open(os.path.join(src, key), "w") as f:
                    f.write(text)
        else:
            raise SystemExit(f"volume {m['name']}: only hostPath and configMap are translated")
        args += ["-v", f"{src}:{m['mountPath']}:{','.join(opts)}"]

    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        args += ["--memory", limits["memory"].replace("Mi", "m").replace("Gi", "g")]
    if "cpu" in limits:
        cpu = limits["cpu"]
        args += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    print(json.dumps(args))
    print(json.dumps(container.get("args", [])))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
