//! THE table of Debian packages mmuscope needs, each with the reason, grouped by what needs it.
//!
//! Commands ask for groups, so `run` installs only what running needs and `test` what its tiers
//! need (see `tiers::TIERS`). A new need is one row here (plus a group if nothing fits).

use clap::ValueEnum;

/// What a set of packages is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Group {
    /// Build the eBPF programs (Debian's rustc-web and LLVM 22; bpf-linker is built from these).
    EbpfBuild,
    /// Lint the eBPF crate for its own target.
    EbpfLint,
    /// Tools the test tiers call.
    TestTools,
    /// The QEMU kernel matrix (`cargo xtask vm`, the `vm` tier).
    Vm,
    /// The `eco` tier's real clients: curl, openssl, tmux, and python3-venv for schemathesis.
    Eco,
    /// The `ship` tier's real tools: systemd-analyze, strace, headless chromium, Node.js.
    Ship,
    /// `cargo xtask bench` (and its smoke in the `host` tier): the bpftrace baseline.
    Bench,
}

impl Group {
    pub const ALL: &[Group] =
        &[Group::EbpfBuild, Group::EbpfLint, Group::TestTools, Group::Vm, Group::Eco, Group::Ship, Group::Bench];

    pub fn name(self) -> &'static str {
        match self {
            Group::EbpfBuild => "ebpf-build",
            Group::EbpfLint => "ebpf-lint",
            Group::TestTools => "test-tools",
            Group::Vm => "vm",
            Group::Eco => "eco",
            Group::Ship => "ship",
            Group::Bench => "bench",
        }
    }
}

pub struct Package {
    pub name: &'static str,
    pub group: Group,
    pub why: &'static str,
}

const fn pkg(name: &'static str, group: Group, why: &'static str) -> Package {
    Package { name, group, why }
}

#[rustfmt::skip]
pub const PACKAGES: &[Package] = &[
    // ebpf-build: agent/build.rs compiles agent-ebpf/programs for bpfel-unknown-none.
    pkg("rustc-web", Group::EbpfBuild, "Debian's rustc 1.96 (LLVM 22) compiles the eBPF crate"),
    pkg("cargo-web", Group::EbpfBuild, "Debian's cargo drives that build and builds bpf-linker"),
    pkg("libstd-rust-web-dev", Group::EbpfBuild, "rustc-web's host std (the eBPF crate's build scripts and macros)"),
    pkg("libstd-rust-web-dev-bpf", Group::EbpfBuild, "prebuilt core for bpfel-unknown-none: no -Z build-std, no rust-src"),
    pkg("llvm-22-dev", Group::EbpfBuild, "bpf-linker links against it; its LLVM must match rustc-web's (22)"),
    pkg("bpftool", Group::EbpfBuild, "inspects the eBPF object, the kernel's BTF and the loaded programs"),
    // ebpf-lint: the lint tier's clippy run for the eBPF crate's own target.
    pkg("rust-web-clippy", Group::EbpfLint, "clippy for rustc-web, to lint the eBPF crate for bpfel-unknown-none"),
    // test-tools: called by the test tiers.
    pkg("prometheus", Group::TestTools, "promtool checks the agent's /metrics exposition"),
    pkg("jq", Group::TestTools, "reads the agent's JSON API and the workload's ground truth"),
    pkg("wrk", Group::TestTools, "200 concurrent HTTP clients on /metrics and the API in the hardening load test; /metrics latency percentiles in `cargo xtask bench`"),
    // vm: `cargo xtask vm` and the vm tier (stock Debian kernels under QEMU TCG).
    pkg("qemu-system-x86", Group::Vm, "qemu-system-x86_64 boots the Debian kernels (TCG, -cpu max: nested KVM in the guest)"),
    pkg("busybox-static", Group::Vm, "the guest's /init shell and tools (static: no libraries in the initramfs)"),
    pkg("cpio", Group::Vm, "packs the guest initramfs (newc)"),
    pkg("kmod", Group::Vm, "depmod/modprobe -D resolve the KVM modules' dependencies in the extracted kernel"),
    pkg("xz-utils", Group::Vm, "decompresses .ko.xz modules (6.12+) for the guest's insmod"),
    pkg("binutils", Group::Vm, "objcopy --strip-debug shrinks the debug binaries copied into the guest"),
    pkg("zstd", Group::Vm, "decompresses zstd kernel images (6.12+) for `cargo xtask vm btf`"),
    pkg("gcc", Group::Vm, "kbuild compiles the HMM mirror test module (tests/kmod/) against each guest kernel's headers package"),
    pkg("make", Group::Vm, "runs kbuild for that module (headers unpacked with dpkg -x, never installed)"),
    pkg("libibverbs-dev", Group::Vm, "headers and libibverbs for the rdma-odp scenario's verbs helper (tests/rdma/), built with gcc"),
    pkg("ibverbs-providers", Group::Vm, "librxe, the soft-RoCE provider libibverbs dlopens, copied into the guest with its rxe.driver file"),
    pkg("iproute2", Group::Vm, "`rdma link add` puts a soft-RoCE link on the guest's dummy netdev (rdma-odp)"),
    pkg("e2fsprogs", Group::Vm, "mkfs.ext4 -d packs the fleet tier's root filesystems and data disks without mounting them"),
    // eco: the ecosystem tier (Prometheus and promtool come from test-tools' `prometheus`).
    pkg("curl", Group::Eco, "the real HTTP client of the TLS and basic-auth checks"),
    pkg("openssl", Group::Eco, "generates the test CA, server and client certificates"),
    pkg("tmux", Group::Eco, "runs `mmuscope top` (send-keys, capture-pane)"),
    pkg("python3-venv", Group::Eco, "a project-local venv (target/eco/venv) for schemathesis from PyPI"),
    // ship: the ship tier (it also uses eco's curl and python3-venv, test-tools' prometheus and the vm group).
    pkg("systemd", Group::Ship, "systemd-analyze verify/security on the unit (systemd need not be PID 1)"),
    pkg("chromium", Group::Ship, "renders the dashboards to PNG, headless"),
    pkg("strace", Group::Ship, "lists the agent's system calls, checked against the unit's SystemCallFilter="),
    pkg("nodejs", Group::Ship, "runs ts-json-schema-generator on @grafana/schema and the CR validation (npm with it)"),
    pkg("buildah", Group::Ship, "builds the OCI image from deploy/container/Containerfile"),
    pkg("podman", Group::Ship, "runs the image with the DaemonSet's capabilities, mounts and security context"),
    pkg("runc", Group::Ship, "podman's runtime here (crun refuses hybrid cgroup hierarchies)"),
    pkg("mmdebstrap", Group::Ship, "makes the image's local Debian base (no registry is reachable) and the fleet tier's root filesystems"),
    // bench: `cargo xtask bench` and its smoke in the host tier.
    pkg("bpftrace", Group::Bench, "the equivalent bpftrace script the probes are compared with"),
];

/// The packages of `groups`, in table order.
pub fn for_groups(groups: &[Group]) -> impl Iterator<Item = &'static Package> {
    PACKAGES.iter().filter(|p| groups.contains(&p.group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_has_packages_and_names_are_unique() {
        for group in Group::ALL {
            assert!(for_groups(&[*group]).next().is_some(), "{group:?} is empty");
            let value = group.to_possible_value().unwrap();
            assert_eq!(value.get_name(), group.name());
        }
        let mut names: Vec<_> = PACKAGES.iter().map(|p| p.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PACKAGES.len());
    }
}
