#!/usr/bin/env bash
# Cross-checks one mmuscope-workload scenario's ground truth against the kernel, independently of the agent:
#  * kvm:kvm_unmap_hva_range per emitting pid must equal the truth's sources (count x vms), grouped by
#    initiator_pid (default: the workload's pid) — exact, every run;
#  * for fork scenarios, order-0 GFP_HIGHUSER_MOVABLE page allocations by the forking task inside its clone syscall
#    (the tracepoint fallback's copy counter, kernel.md §4.1) are printed next to the truth's copied_pages.
# Events of other pids are reported, not counted (another KVM user on the host, or kthread work on the mm).
#
# usage: verify-scenario.sh RUNS SCENARIO [ARGS...]     e.g. verify-scenario.sh 5 kvm-munmap --iterations 1000
# (root; needs bpftrace, jq, tracefs; WORKLOAD=path overrides the binary; TRUTH_OUT=file keeps run 1's truth)
set -euo pipefail
runs=${1:?usage: verify-scenario.sh RUNS SCENARIO [ARGS...]}
shift
[ $# -ge 1 ] || { echo "usage: verify-scenario.sh RUNS SCENARIO [ARGS...]" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
workload=${WORKLOAD:-$here/../../target/debug/mmuscope-workload}
[ -x "$workload" ] || { echo "no workload binary at $workload (cargo build -p mmuscope-tests)" >&2; exit 2; }
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing

# SIGINT makes bpftrace print its maps and exit; under load it has been seen to miss it, so insist (TERM also
# prints the maps) rather than wait forever.
stop_bpftrace() {
  kill -INT "$1" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$1" 2>/dev/null; then kill -INT "$1"; sleep 2; fi
  if kill -0 "$1" 2>/dev/null; then kill -TERM "$1"; fi
  wait "$1" || true
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for run in $(seq 1 "$runs"); do
  bpftrace -e '
    BEGIN { printf("READY\n"); }
    tracepoint:kvm:kvm_unmap_hva_range { @ev[pid] = count(); }
    tracepoint:raw_syscalls:sys_enter /args->id == 56 || args->id == 57 || args->id == 435/ { @infork[tid] = 1; }
    tracepoint:raw_syscalls:sys_exit /@infork[tid]/ { delete(@infork[tid]); }
    tracepoint:kmem:mm_page_alloc /@infork[tid] && args->order == 0 && (args->gfp_flags & 0x100cca) == 0x100cca/ {
      @forkcopy[pid] = count();
    }
    END { print(@ev); print(@forkcopy); clear(@ev); clear(@forkcopy); clear(@infork); }' >"$tmp/bt" 2>"$tmp/bt.err" &
  bt=$!
  for _ in $(seq 1 600); do grep -q READY "$tmp/bt" 2>/dev/null && break; sleep 0.1; done
  grep -q READY "$tmp/bt" || { echo "bpftrace did not start within 60 s:" >&2; cat "$tmp/bt.err" >&2; kill "$bt"; exit 2; }
  if ! "$workload" "$@" >"$tmp/truth.json" 2>"$tmp/wl.err"; then
    cat "$tmp/wl.err" >&2; stop_bpftrace "$bt"; exit 1
  fi
  sleep 0.2
  stop_bpftrace "$bt"
  pid=$(jq -r .pid "$tmp/truth.json")
  for path in $(jq -r '.cgroups.default.path, (.cross_cgroup.initiator_cgroups.default.path // empty)' "$tmp/truth.json"); do
    "$workload" cleanup-cgroup --path "$path" --prune-parents 2>/dev/null || true
  done
  # expected events per pid: "pid count" lines
  jq -r --argjson me "$pid" '[.invalidations.sources[] | {p: (.initiator_pid // $me), n: (.count * .vms)}]
      | group_by(.p) | map("\(.[0].p) \(map(.n) | add)") | .[]' "$tmp/truth.json" >"$tmp/expected"
  grep -q . "$tmp/expected" || echo "$pid 0" >"$tmp/expected"
  tr '[]:' '   ' <"$tmp/bt" >"$tmp/bt.flat"   # "@ev[123]: 4" -> "@ev 123   4"
  verdict=OK
  summary=""
  while read -r p want; do
    got=$(awk -v p="$p" '$1=="@ev" && $2==p {print $NF}' "$tmp/bt.flat")
    got=${got:-0}
    summary+=" pid $p: expected $want observed $got;"
    [ "$got" = "$want" ] || { verdict=MISMATCH; fail=1; }
  done <"$tmp/expected"
  others=$(awk '$1=="@ev" {print $2 ":" $NF}' "$tmp/bt.flat" | grep -vE "^($(cut -d' ' -f1 "$tmp/expected" | paste -sd'|')):" || true)
  fork=$(jq -r 'if .fork then " fork: copied_pages \(.fork.copied_pages) thp_splits \(.fork.thp_splits)" else "" end' "$tmp/truth.json")
  if [ -n "$fork" ]; then
    allocs=$(awk -v p="$pid" '$1=="@forkcopy" && $2==p {print $NF}' "$tmp/bt.flat")
    fork+=", order-0 movable allocs in fork ${allocs:-0}"
  fi
  echo "run $run $*:$summary$fork $verdict"
  [ -z "$others" ] || echo "  events from other pids (pid:count): $(echo $others)"
  [ "$run" != 1 ] || cp "$tmp/truth.json" "${TRUTH_OUT:-/dev/null}"
done
exit $fail
