//! Test-support for host integration tests: prerequisites, the agent process, scraping, running the workload and
//! removing its cgroups. Each concern is one module; the integration tests in `tests/` only compose them.

pub mod agent;
pub mod bins;
pub mod cleanup;
pub mod held;
pub mod inventory;
pub mod prereq;
pub mod scrape;
pub mod workload;

pub use agent::Agent;
pub use cleanup::CgroupGuard;
pub use prereq::HostEnv;
pub use scrape::{Scraper, changed_cgroups, counter_by_cgroup, scrape_until};
pub use workload::{run_workload, run_workload_command};
