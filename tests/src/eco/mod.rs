//! Ecosystem test support: the real tools the `eco` tier drives against the agent — a Prometheus server and promtool
//! (Debian `prometheus`), schemathesis (PyPI, in a project-local venv), curl, openssl (test certificates), tmux (for
//! `mmuscope top`) — plus a root-only helper that puts counts for many cgroups into the agent's map.

pub mod certs;
pub mod inject;
pub mod prometheus;
pub mod tmux;
pub mod tools;
