# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mmuscope_global_optspecs
    string join \n btf= mode= map.stats-entries= slow.min-duration= probes.deny= probes.ksm-cow probes.late-callbacks probes.keep-attached web.listen-address= web.telemetry-path= web.config.file= web.disable-process-details web.health-requires-auth log.level= log.format= max-cgroups= cgroups.deleted-ttl= kubernetes.host-root= probes.strict pin= bpf.run-stats stacks.disable config.file= h/help V/version
end

function __fish_mmuscope_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mmuscope_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mmuscope_using_subcommand
    set -l cmd (__fish_mmuscope_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mmuscope -n "__fish_mmuscope_needs_command" -l btf -d 'Kernel BTF to read struct layouts and prototypes from' -r -F
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l mode -d 'Only use attach alternatives of this mode' -r -f -a "fentry\t''
kprobe\t''
tracepoint\t'BTF-typed (`tp_btf`) or classic tracepoints'"
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l map.stats-entries -d 'max_entries of each aggregation map (cgroup × event keys)' -r
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l slow.min-duration -d 'Brackets at least this long are kept, with pid, cause and range, for /api/v1/slow (fentry and kprobe modes; e.g. 100us, 1ms; 0s keeps every bracket)' -r
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l probes.deny -d 'Hide a kernel function, `struct.member`, enumerator or tracepoint from the probe planner, or switch off a probe family by name, as if this kernel lacked it (repeat or comma-separate; for testing degradation)' -r
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l web.listen-address -d 'Address to serve HTTP on; repeat for several' -r
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l web.telemetry-path -d 'Path under which to expose metrics' -r
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l web.config.file -d 'Web configuration in the Prometheus exporter-toolkit format (TLS, client CA, basic auth with bcrypt hashes); re-read when it or the files it names change' -r -F
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l log.level -d 'Only log messages with this severity or above: debug, info, warn, error. Changes on SIGHUP without a restart. MMUSCOPE_LOG (a tracing filter such as `info,mmuscope::web=debug`) overrides it when set' -r -f -a "debug\t''
info\t''
warn\t''
error\t''"
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l log.format -d 'Format of the log lines on stderr: logfmt or json' -r -f -a "logfmt\t'`ts=… level=info target=… message="…" key=value`, one line per event'
json\t'One JSON object per line: `timestamp`, `level`, `target`, `message` and the event\'s fields'"
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l max-cgroups -d 'Cgroups with their own series; the rest are aggregated into cgroup="other" (0: no limit)' -r
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l cgroups.deleted-ttl -d 'How long the series of a deleted cgroup stay after the deletion is noticed (e.g. 30s, 5m)' -r
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l kubernetes.host-root -d 'Where the node\'s filesystem is, to read pod and container names from /var/log/pods, /var/log/containers and /var/lib/kubelet/pods (e.g. /host in a DaemonSet)' -r -F
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l pin -d 'Pin the counter maps in this bpffs directory (e.g. /sys/fs/bpf/mmuscope) so that counters continue across restarts; unset, nothing is pinned and nothing outlives the agent' -r -F
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l config.file -d 'TOML file with values for these flags (keys are the long flag names, e.g. `[web] listen-address = [...]`); flags on the command line win. Documented default: /etc/mmuscope/mmuscope.toml' -r -F
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l probes.ksm-cow -d 'Name the copy on write of a KSM page (a write that breaks its sharing) cause="ksm_cow" instead of page_fault (fentry and kprobe modes). Off by default: its programs then run on every copy-on-write fault of every process on the host (docs/probes.md)'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l probes.late-callbacks -d 'Time subscriber callbacks first met after start-up (a KVM, GPU or RDMA module loaded later, a driver\'s first user) without a restart. The price: the agent keeps CAP_PERFMON (and CAP_SYS_ADMIN where kernel.perf_event_paranoid is 3, Debian\'s default) in its permitted set for its whole life, raised only while attaching a kprobe; by default it drops every capability after start-up and times only the callbacks known then. `check` accepts it and plans the same (the callback timers attach only in `run`)'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l probes.keep-attached -d 'Keep the hooks attached on demand attached all the time: the fork-copy family\'s per-page hook (by default attached only while some process has pinned pages) and the operation, TLB-gather and cause windows (only while some mm has notifier subscriptions), which every page fault, unmap, mmap/munmap/madvise/fork system call and exit on the host runs. Where they cannot be attached on demand (kprobe mode; fentry mode on 5.10) their families (fork_copies, overlapping_brackets, secondary_tlb, causes) are off by default and this flag switches them on. The price: their programs run for every process on the host, a kprobe trap per call in kprobe mode (docs/probes.md, BENCHMARKS.md)'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l web.disable-process-details -d 'Answer 403 on /api/v1/subscribers and /api/v1/slow, which show the workloads\' pids, process names and cgroups to anyone who may use the API'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l web.health-requires-auth -d 'Require the web config\'s basic-auth credentials on /healthz and /readyz too (by default they answer without, so that kubelet and load-balancer probes work)'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l probes.strict -d 'Exit with status 3 at start-up, naming the family and why, when a required probe family attaches nothing. Without it the agent serves what did attach and is ready anyway (loose attachment); the missing family shows in `mmuscope_probe_attached`, `check`, `/api/v1/status` and the log'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l bpf.run-stats -d 'Account the run time of the agent\'s eBPF programs (BPF_ENABLE_STATS, needs CAP_SYS_ADMIN) for mmuscope_bpf_program_run_seconds_total and _runs_total. Off by default: while it is on, every eBPF program on the host, not only ours, pays two clock reads per run'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -l stacks.disable -d 'Switch the on-demand stack capture off: /api/v1/stacks and `mmuscope stacks` answer 404, and the programs are loaded without it (the verifier drops it), instead of carrying an idle check of one load and a branch'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -s V -l version -d 'Print version'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -f -a "run" -d 'Attach the probes and serve metrics (the default)'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -f -a "check" -d 'Show the probe plan for this kernel: what attaches, in which mode, and why not'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -f -a "top" -d 'Live terminal view of the busiest cgroups, read from an agent\'s HTTP API (local or remote)'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -f -a "snapshot" -d 'Print an agent\'s API view once: status and cgroups (table, or JSON with --json)'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -f -a "stacks" -d 'Capture kernel stacks of invalidations from an agent for a few seconds: folded stacks, an SVG flame graph or JSON'
complete -c mmuscope -n "__fish_mmuscope_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l btf -d 'Kernel BTF to read struct layouts and prototypes from' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l mode -d 'Only use attach alternatives of this mode' -r -f -a "fentry\t''
kprobe\t''
tracepoint\t'BTF-typed (`tp_btf`) or classic tracepoints'"
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l map.stats-entries -d 'max_entries of each aggregation map (cgroup × event keys)' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l slow.min-duration -d 'Brackets at least this long are kept, with pid, cause and range, for /api/v1/slow (fentry and kprobe modes; e.g. 100us, 1ms; 0s keeps every bracket)' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l probes.deny -d 'Hide a kernel function, `struct.member`, enumerator or tracepoint from the probe planner, or switch off a probe family by name, as if this kernel lacked it (repeat or comma-separate; for testing degradation)' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l web.listen-address -d 'Address to serve HTTP on; repeat for several' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l web.telemetry-path -d 'Path under which to expose metrics' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l web.config.file -d 'Web configuration in the Prometheus exporter-toolkit format (TLS, client CA, basic auth with bcrypt hashes); re-read when it or the files it names change' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l log.level -d 'Only log messages with this severity or above: debug, info, warn, error. Changes on SIGHUP without a restart. MMUSCOPE_LOG (a tracing filter such as `info,mmuscope::web=debug`) overrides it when set' -r -f -a "debug\t''
info\t''
warn\t''
error\t''"
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l log.format -d 'Format of the log lines on stderr: logfmt or json' -r -f -a "logfmt\t'`ts=… level=info target=… message="…" key=value`, one line per event'
json\t'One JSON object per line: `timestamp`, `level`, `target`, `message` and the event\'s fields'"
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l max-cgroups -d 'Cgroups with their own series; the rest are aggregated into cgroup="other" (0: no limit)' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l cgroups.deleted-ttl -d 'How long the series of a deleted cgroup stay after the deletion is noticed (e.g. 30s, 5m)' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l kubernetes.host-root -d 'Where the node\'s filesystem is, to read pod and container names from /var/log/pods, /var/log/containers and /var/lib/kubelet/pods (e.g. /host in a DaemonSet)' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l pin -d 'Pin the counter maps in this bpffs directory (e.g. /sys/fs/bpf/mmuscope) so that counters continue across restarts; unset, nothing is pinned and nothing outlives the agent' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l config.file -d 'TOML file with values for these flags (keys are the long flag names, e.g. `[web] listen-address = [...]`); flags on the command line win. Documented default: /etc/mmuscope/mmuscope.toml' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l probes.ksm-cow -d 'Name the copy on write of a KSM page (a write that breaks its sharing) cause="ksm_cow" instead of page_fault (fentry and kprobe modes). Off by default: its programs then run on every copy-on-write fault of every process on the host (docs/probes.md)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l probes.late-callbacks -d 'Time subscriber callbacks first met after start-up (a KVM, GPU or RDMA module loaded later, a driver\'s first user) without a restart. The price: the agent keeps CAP_PERFMON (and CAP_SYS_ADMIN where kernel.perf_event_paranoid is 3, Debian\'s default) in its permitted set for its whole life, raised only while attaching a kprobe; by default it drops every capability after start-up and times only the callbacks known then. `check` accepts it and plans the same (the callback timers attach only in `run`)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l probes.keep-attached -d 'Keep the hooks attached on demand attached all the time: the fork-copy family\'s per-page hook (by default attached only while some process has pinned pages) and the operation, TLB-gather and cause windows (only while some mm has notifier subscriptions), which every page fault, unmap, mmap/munmap/madvise/fork system call and exit on the host runs. Where they cannot be attached on demand (kprobe mode; fentry mode on 5.10) their families (fork_copies, overlapping_brackets, secondary_tlb, causes) are off by default and this flag switches them on. The price: their programs run for every process on the host, a kprobe trap per call in kprobe mode (docs/probes.md, BENCHMARKS.md)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l web.disable-process-details -d 'Answer 403 on /api/v1/subscribers and /api/v1/slow, which show the workloads\' pids, process names and cgroups to anyone who may use the API'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l web.health-requires-auth -d 'Require the web config\'s basic-auth credentials on /healthz and /readyz too (by default they answer without, so that kubelet and load-balancer probes work)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l probes.strict -d 'Exit with status 3 at start-up, naming the family and why, when a required probe family attaches nothing. Without it the agent serves what did attach and is ready anyway (loose attachment); the missing family shows in `mmuscope_probe_attached`, `check`, `/api/v1/status` and the log'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l bpf.run-stats -d 'Account the run time of the agent\'s eBPF programs (BPF_ENABLE_STATS, needs CAP_SYS_ADMIN) for mmuscope_bpf_program_run_seconds_total and _runs_total. Off by default: while it is on, every eBPF program on the host, not only ours, pays two clock reads per run'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -l stacks.disable -d 'Switch the on-demand stack capture off: /api/v1/stacks and `mmuscope stacks` answer 404, and the programs are loaded without it (the verifier drops it), instead of carrying an idle check of one load and a branch'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand check" -l btf -d 'Kernel BTF to read struct layouts and prototypes from' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand check" -l mode -d 'Only use attach alternatives of this mode' -r -f -a "fentry\t''
kprobe\t''
tracepoint\t'BTF-typed (`tp_btf`) or classic tracepoints'"
complete -c mmuscope -n "__fish_mmuscope_using_subcommand check" -l map.stats-entries -d 'max_entries of each aggregation map (cgroup × event keys)' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand check" -l slow.min-duration -d 'Brackets at least this long are kept, with pid, cause and range, for /api/v1/slow (fentry and kprobe modes; e.g. 100us, 1ms; 0s keeps every bracket)' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand check" -l probes.deny -d 'Hide a kernel function, `struct.member`, enumerator or tracepoint from the probe planner, or switch off a probe family by name, as if this kernel lacked it (repeat or comma-separate; for testing degradation)' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand check" -l log.level -d 'Only log messages with this severity or above: debug, info, warn, error. Changes on SIGHUP without a restart. MMUSCOPE_LOG (a tracing filter such as `info,mmuscope::web=debug`) overrides it when set' -r -f -a "debug\t''
info\t''
warn\t''
error\t''"
complete -c mmuscope -n "__fish_mmuscope_using_subcommand check" -l log.format -d 'Format of the log lines on stderr: logfmt or json' -r -f -a "logfmt\t'`ts=… level=info target=… message="…" key=value`, one line per event'
json\t'One JSON object per line: `timestamp`, `level`, `target`, `message` and the event\'s fields'"
complete -c mmuscope -n "__fish_mmuscope_using_subcommand check" -l probes.ksm-cow -d 'Name the copy on write of a KSM page (a write that breaks its sharing) cause="ksm_cow" instead of page_fault (fentry and kprobe modes). Off by default: its programs then run on every copy-on-write fault of every process on the host (docs/probes.md)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand check" -l probes.late-callbacks -d 'Time subscriber callbacks first met after start-up (a KVM, GPU or RDMA module loaded later, a driver\'s first user) without a restart. The price: the agent keeps CAP_PERFMON (and CAP_SYS_ADMIN where kernel.perf_event_paranoid is 3, Debian\'s default) in its permitted set for its whole life, raised only while attaching a kprobe; by default it drops every capability after start-up and times only the callbacks known then. `check` accepts it and plans the same (the callback timers attach only in `run`)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand check" -l probes.keep-attached -d 'Keep the hooks attached on demand attached all the time: the fork-copy family\'s per-page hook (by default attached only while some process has pinned pages) and the operation, TLB-gather and cause windows (only while some mm has notifier subscriptions), which every page fault, unmap, mmap/munmap/madvise/fork system call and exit on the host runs. Where they cannot be attached on demand (kprobe mode; fentry mode on 5.10) their families (fork_copies, overlapping_brackets, secondary_tlb, causes) are off by default and this flag switches them on. The price: their programs run for every process on the host, a kprobe trap per call in kprobe mode (docs/probes.md, BENCHMARKS.md)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand check" -l json -d 'Print JSON instead of a table'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand check" -l strict -d 'Exit 3 unless every family attached with its best alternative (within --mode)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand top" -l url -d 'Base URL of the agent' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand top" -l auth.username -d 'Basic-auth user name' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand top" -l auth.password-file -d 'File holding the basic-auth password (or set MMUSCOPE_PASSWORD)' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand top" -l tls.ca-file -d 'CA certificate(s) (PEM) to verify the agent\'s certificate; default: the Mozilla roots' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand top" -l tls.cert-file -d 'Client certificate (PEM) for agents that require one; with --tls.key-file' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand top" -l tls.key-file -d 'Private key (PEM) of --tls.cert-file' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand top" -l interval -d 'Refresh interval (e.g. 1s, 500ms)' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand top" -l limit -d 'Cgroups fetched per refresh (the busiest by total invalidations; rates are computed from these)' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand top" -l tls.insecure-skip-verify -d 'Do not verify the agent\'s certificate (testing only)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand top" -s h -l help -d 'Print help'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand snapshot" -l url -d 'Base URL of the agent' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand snapshot" -l auth.username -d 'Basic-auth user name' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand snapshot" -l auth.password-file -d 'File holding the basic-auth password (or set MMUSCOPE_PASSWORD)' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand snapshot" -l tls.ca-file -d 'CA certificate(s) (PEM) to verify the agent\'s certificate; default: the Mozilla roots' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand snapshot" -l tls.cert-file -d 'Client certificate (PEM) for agents that require one; with --tls.key-file' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand snapshot" -l tls.key-file -d 'Private key (PEM) of --tls.cert-file' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand snapshot" -l sort -d 'Sort key of the cgroup list' -r -f -a "invalidations\t''
p99\t''
double_notifications\t''
fork_copies\t''
cgroup\t''
id\t''"
complete -c mmuscope -n "__fish_mmuscope_using_subcommand snapshot" -l limit -d 'Cgroups listed' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand snapshot" -l tls.insecure-skip-verify -d 'Do not verify the agent\'s certificate (testing only)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand snapshot" -l json -d 'Print JSON (`{"status": ..., "cgroups": ...}`) instead of a table'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand snapshot" -s h -l help -d 'Print help'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -l url -d 'Base URL of the agent' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -l auth.username -d 'Basic-auth user name' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -l auth.password-file -d 'File holding the basic-auth password (or set MMUSCOPE_PASSWORD)' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -l tls.ca-file -d 'CA certificate(s) (PEM) to verify the agent\'s certificate; default: the Mozilla roots' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -l tls.cert-file -d 'Client certificate (PEM) for agents that require one; with --tls.key-file' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -l tls.key-file -d 'Private key (PEM) of --tls.cert-file' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -l seconds -d 'How long the agent captures, in seconds (at most 60)' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -l cgroup -d 'Only events of this owner cgroup: its id or its path (e.g. /system.slice/libvirtd.service)' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -l kind -d 'Kinds to capture: all, or a comma-separated list of invalidation, double_notification, fork_copy' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -l event -d 'Only invalidations of these events (comma-separated, as in the `event` label, e.g. clear,unmap); needs --kind invalidation' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -l cause -d 'Only invalidations of these causes (comma-separated, as in the `cause` label, e.g. madvise,reclaim); needs --kind invalidation' -r
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -l format -d 'Output format: folded stacks (text), an SVG flame graph, or the API\'s JSON' -r -f -a "folded\t''
svg\t''
json\t''"
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -s o -l output -d 'Write to this file instead of standard output' -r -F
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -l tls.insecure-skip-verify -d 'Do not verify the agent\'s certificate (testing only)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand stacks" -s h -l help -d 'Print help'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand help; and not __fish_seen_subcommand_from run check top snapshot stacks help" -f -a "run" -d 'Attach the probes and serve metrics (the default)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand help; and not __fish_seen_subcommand_from run check top snapshot stacks help" -f -a "check" -d 'Show the probe plan for this kernel: what attaches, in which mode, and why not'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand help; and not __fish_seen_subcommand_from run check top snapshot stacks help" -f -a "top" -d 'Live terminal view of the busiest cgroups, read from an agent\'s HTTP API (local or remote)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand help; and not __fish_seen_subcommand_from run check top snapshot stacks help" -f -a "snapshot" -d 'Print an agent\'s API view once: status and cgroups (table, or JSON with --json)'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand help; and not __fish_seen_subcommand_from run check top snapshot stacks help" -f -a "stacks" -d 'Capture kernel stacks of invalidations from an agent for a few seconds: folded stacks, an SVG flame graph or JSON'
complete -c mmuscope -n "__fish_mmuscope_using_subcommand help; and not __fish_seen_subcommand_from run check top snapshot stacks help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
