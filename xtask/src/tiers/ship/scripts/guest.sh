#!/bin/sh
# Runs inside the QEMU guest of the ship tier (stock Debian kernel, fentry mode available): the agent, workloads
# for DURATION seconds, and a dump of the agent's mmuscope_* series every INTERVAL seconds on stdout, each headed
# by the guest's uptime so the host can put the samples on its own clock. The host turns the dumps into
# OpenMetrics and backfills them into the tier's Prometheus (see live.rs).
# Usage: guest.sh DURATION INTERVAL [kvm|sectlb]
# kvm (the default): the scenarios with KVM VMs as the subscriber. sectlb: the test module's secondary-TLB subscriber
# instead (6.6+ kernels, where KVM implements no secondary-TLB op): every context, whole-mm calls and the
# overlapping_secondary_tlb double (mremap-move), and the module's interval notifier (mirror-collide).
set -u
duration=$1
interval=$2
set=${3:-kvm}
uptime() { cut -d' ' -f1 /proc/uptime; }
mmuscope run --mode fentry --web.listen-address 127.0.0.1:9476 >/tmp/agent.log 2>&1 &
agent=$!
tries=0
until wget -q -O /dev/null http://127.0.0.1:9476/readyz; do
    tries=$((tries + 1))
    if [ $tries -gt 600 ] || ! kill -0 $agent 2>/dev/null; then
        echo "agent not ready"; cat /tmp/agent.log; exit 1
    fi
    sleep 0.2
done
echo "MMUSCOPE-SHIP-READY $(uptime)"
dump() {
    echo "MMUSCOPE-SHIP-DUMP $(uptime)"
    wget -q -O - http://127.0.0.1:9476/metrics | grep '^mmuscope_'
    echo "MMUSCOPE-SHIP-END"
}
( while :; do dump; sleep "$interval"; done ) &
dumper=$!
# Workloads in fixed cgroups, removed and made again every round so the series continue under the same paths. The
# agent names a cgroup when it sees it alive at a scrape; one that is gone first is reported as "unknown".
# --await-hooks: after registering its notifier, a workload waits for the agent's subscription hooks (attached only
# while some mm has subscriptions); without them its brackets would have no TLB-gather window or cause.
run() {
    name=$1; shift
    mmuscope-workload "$@" --await-hooks http://127.0.0.1:9476 --cgroup-parent /ship --cgroup-name "$name" \
        >/dev/null 2>>/tmp/workload.log ||
        echo "workload $name ($*) failed" >>/tmp/failed
}
# sectlb: a long-lived KVM VM beside the short scenarios, as on a host running VMs, so the subscription hooks stay
# attached. Without it they switched at every scenario, and a later round's TLB flushes were counted outside their
# gather window (a churn bug not yet understood: the vm tier's back-to-back scenarios count them exactly).
holding=
if [ "$set" = sectlb ]; then
    mkfifo /tmp/hold
    mmuscope-workload multi-vm --iterations 1 --vms 1 --hold --cgroup-parent /ship --cgroup-name holder \
        </tmp/hold >/dev/null 2>>/tmp/workload.log &
    exec 3>/tmp/hold
    holding=$!
fi
end=$(( $(cut -d. -f1 /proc/uptime) + duration ))
round=0
while [ "$(cut -d. -f1 /proc/uptime)" -lt $end ]; do
    round=$((round + 1))
    n=$(( (round % 3 + 1) * 150 ))
    if [ "$set" = sectlb ]; then
        cgroups="tlb-madvise tlb-mprotect tlb-mremap mirror"
        run tlb-madvise kvm-madvise --iterations $n --subscriber sectlb
        run tlb-mprotect kvm-mprotect --iterations $((n / 15)) --subscriber sectlb
        run tlb-mremap mremap-move --iterations 2 --subscriber sectlb
        # The module's interval notifier (an HMM mirror): the dashboards' GPU/RDMA row.
        run mirror mirror-collide --rounds 2 --hits 4 --misses 4
    else
        cgroups="vm-madvise vm-munmap vm-mprotect vm-thp forker thp-forker vm-cross vm-cross-initiator"
        run vm-madvise kvm-madvise --iterations $n
        run vm-munmap kvm-munmap --iterations $n
        run vm-mprotect kvm-mprotect --iterations $((n / 5))
        run vm-thp thp-partial-munmap --iterations 2
        # --agent-url: fork once the agent has attached its fork-copy hook (it does when it sees the pin).
        run forker fork-pinned --pages $((n * 2)) --agent-url http://127.0.0.1:9476
        run thp-forker fork-pinned-thp --agent-url http://127.0.0.1:9476
        run vm-cross cross-cgroup --regions 2
    fi
    sleep $((interval + 1))
    for c in $cgroups; do
        mmuscope-workload cleanup-cgroup --path "/ship/$c" >/dev/null 2>&1
    done
done
kill $dumper
wait $dumper 2>/dev/null
if [ -n "$holding" ]; then
    exec 3>&- # closing its stdin ends the hold
    wait $holding || echo "workload holder failed" >>/tmp/failed
    mmuscope-workload cleanup-cgroup --path /ship/holder >/dev/null 2>&1
fi
dump
kill $agent
wait $agent
# What the agent did with its capabilities on this kernel (shown by the host).
grep -m1 'mmuscope::privileges' /tmp/agent.log | sed 's/^/MMUSCOPE-SHIP-AGENT /'
# For a failure's post-mortem (the host keeps this output as target/ship/guest-<release>.log).
echo "MMUSCOPE-SHIP-AGENT-LOG"; cat /tmp/agent.log
echo "MMUSCOPE-SHIP-WORKLOAD-LOG"; cat /tmp/workload.log 2>/dev/null
echo "MMUSCOPE-SHIP-DONE $(uptime) rounds=$round"
if [ -s /tmp/failed ]; then cat /tmp/failed; tail -20 /tmp/workload.log; exit 1; fi
