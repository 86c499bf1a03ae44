//! mmuscope's test support: the ground-truth model shared with the `mmuscope-workload` generator, the cgroup
//! fixture, a Prometheus text parser, and the harness that drives the agent in host integration tests.
//!
//! * [`truth`]: the JSON the workload prints and the tests read.
//! * [`cgroup`]: find hierarchies, create/enter/remove a cgroup (hybrid v1 `memory` + cgroup2 aware).
//! * [`promtext`]: parse `/metrics`.
//! * [`hardening`]: raw HTTP, BPF objects held by a process, agent exit statuses (the hardening tests).
//! * [`harness`]: prerequisites, agent process, scraping, running the workload, cleanup guards.
//! * [`eco`]: the ecosystem tier's tools (Prometheus, promtool, schemathesis, curl, openssl, tmux) and a root-only
//!   helper that writes per-cgroup counts into the agent's map.

pub mod cgroup;
pub mod eco;
pub mod hardening;
pub mod harness;
pub mod promtext;
pub mod truth;
