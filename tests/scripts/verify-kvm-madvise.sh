#!/usr/bin/env bash
# Cross-checks mmuscope-workload's ground truth against the kernel, independently of the agent: counts
# kvm:kvm_unmap_hva_range per pid with bpftrace while `kvm-madvise --iterations N` runs, and requires
# events(workload pid) == truth.invalidations.kvm_unmap_hva_range exactly. Events from any other task are reported
# (they would be kthread work such as compaction on the workload's mm, or another KVM user on the host).
#
# usage: verify-kvm-madvise.sh [N [RUNS]]     (root; needs bpftrace, jq, tracefs; WORKLOAD=path overrides the binary)
set -euo pipefail
n=${1:-1000}
runs=${2:-1}
here=$(cd "$(dirname "$0")" && pwd)
workload=${WORKLOAD:-$here/../../target/debug/mmuscope-workload}
[ -x "$workload" ] || { echo "no workload binary at $workload (cargo build -p mmuscope-tests)" >&2; exit 2; }
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for run in $(seq 1 "$runs"); do
  bpftrace -e '
    BEGIN { printf("READY\n"); }
    tracepoint:kvm:kvm_unmap_hva_range { @ev[pid, comm] = count(); }
    tracepoint:syscalls:sys_enter_madvise /comm == "mmuscope-worklo" && args->behavior == 4/ { @dontneed[pid] = count(); }
    END { print(@ev); print(@dontneed); clear(@ev); clear(@dontneed); }' >"$tmp/bt" 2>"$tmp/bt.err" &
  bt=$!
  for _ in $(seq 1 100); do grep -q READY "$tmp/bt" 2>/dev/null && break; sleep 0.1; done
  grep -q READY "$tmp/bt" || { cat "$tmp/bt.err" >&2; kill "$bt"; exit 2; }
  "$workload" kvm-madvise --iterations "$n" >"$tmp/truth.json" 2>"$tmp/wl.err" || { cat "$tmp/wl.err" >&2; kill -INT "$bt"; exit 1; }
  kill -INT "$bt"; wait "$bt" || true
  pid=$(jq -r .pid "$tmp/truth.json")
  expected=$(jq -r .invalidations.kvm_unmap_hva_range "$tmp/truth.json")
  observed=$(awk -v p="$pid" -F'[][, :]+' '$1=="@ev" && $2==p {print $NF}' "$tmp/bt")
  dontneed=$(awk -v p="$pid" -F'[][, :]+' '$1=="@dontneed" && $2==p {print $NF}' "$tmp/bt")
  others=$(awk -v p="$pid" -F'[][, :]+' '$1=="@ev" && $2!=p' "$tmp/bt")
  "$workload" cleanup-cgroup --path "$(jq -r .cgroups.default.path "$tmp/truth.json")" --prune-parents 2>/dev/null
  verdict=OK
  [ "${observed:-0}" = "$expected" ] || { verdict=MISMATCH; fail=1; }
  echo "run $run N=$n pid=$pid expected=$expected observed=${observed:-0} madvise(DONTNEED)=${dontneed:-0} $verdict"
  [ -z "$others" ] || echo "  events from other tasks: $others"
done
exit $fail
