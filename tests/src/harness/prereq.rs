//! Prerequisites of host tests, and the CI rule: in CI (`CI` set, see [`in_ci`]) a missing prerequisite fails the
//! test with its name; elsewhere the test prints a loud `SKIPPED: reason` and returns.
//!
//! Host tests share the host's cgroup tree, the agent's kernel maps and tracefs, so two at once in one test process
//! would disturb each other's counts: a [`HostEnv`] is held for the whole test, and asking for a second one while
//! another test holds one fails at once, naming both (run them with `--test-threads=1`, as the host tier does).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::cgroup::Hierarchies;

use super::bins;

/// Everything a host test needs, once checked.
#[derive(Debug)]
pub struct HostEnv {
    pub agent_bin: PathBuf,
    pub workload_bin: PathBuf,
    pub hierarchies: Hierarchies,
    _alone: Alone,
}

/// The test that holds the process's one [`HostEnv`], if any (its thread's name, which libtest sets to the test's).
static HOLDER: Mutex<Option<String>> = Mutex::new(None);

/// Proof that no other host test of this process runs; released on drop (also when the test panics).
#[derive(Debug)]
struct Alone;

impl Alone {
    fn take() -> Self {
        let me = std::thread::current().name().unwrap_or("a host test").to_owned();
        let mut holder = HOLDER.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(other) = holder.as_ref() {
            panic!(
                "host tests must not run in parallel: {me} started while {other} runs (they share cgroups, kernel \
                 maps and tracefs); run them with --test-threads=1"
            );
        }
        *holder = Some(me);
        Alone
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        *HOLDER.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl HostEnv {
    /// Checks all prerequisites. `None` means "skip" (already reported); in CI a missing one panics instead.
    /// Panics if another test of this process holds a `HostEnv` (see the module docs).
    pub fn require(workload_default: &str) -> Option<Self> {
        match Self::probe(workload_default) {
            Ok(env) => Some(env),
            Err(missing) if in_ci() => {
                panic!("host test prerequisite(s) missing in CI: {}", missing.join("; "))
            }
            Err(missing) => {
                let bar = "=".repeat(78);
                eprintln!("\n{bar}\nSKIPPED: {}\n{bar}\n", missing.join("; "));
                None
            }
        }
    }

    /// Checks everything and lists every missing prerequisite, not just the first.
    pub fn probe(workload_default: &str) -> Result<Self, Vec<String>> {
        let mut missing = Vec::new();
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            missing.push("root (needed to create cgroups and load eBPF programs)".to_owned());
        }
        if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
            missing.push(format!("/dev/kvm ({e})"));
        }
        let hierarchies = Hierarchies::discover().map_err(|e| missing.push(format!("cgroup hierarchies ({e})")));
        let agent_bin = bins::agent_bin();
        check_executable(&agent_bin, "agent binary", bins::AGENT_BIN_ENV, &mut missing);
        let workload_bin = bins::workload_bin(workload_default);
        check_executable(&workload_bin, "workload binary", bins::WORKLOAD_BIN_ENV, &mut missing);
        match hierarchies {
            Ok(hierarchies) if missing.is_empty() => {
                Ok(Self { agent_bin, workload_bin, hierarchies, _alone: Alone::take() })
            }
            _ => Err(missing),
        }
    }
}

/// The project's one CI rule (`mmuscope_ci`), the same that `cargo xtask test` applies: `CI` set to anything but
/// empty, `false` or `0`.
pub use mmuscope_ci::in_ci;

fn check_executable(path: &Path, what: &str, env: &str, missing: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
        Ok(_) => missing.push(format!("{what} {} is not an executable file", path.display())),
        Err(e) => missing.push(format!("{what} {} ({e}; build it, or point {env} at it)", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::Alone;

    #[test]
    fn a_second_host_test_at_once_is_refused_and_one_after_is_not() {
        let first = Alone::take();
        let second = std::thread::Builder::new()
            .name("tests::second".into())
            .spawn(|| std::panic::catch_unwind(Alone::take).map(drop))
            .unwrap()
            .join()
            .unwrap();
        let message = second.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("tests::second started while") && message.contains("--test-threads=1"), "{message}");
        drop(first);
        drop(Alone::take());
    }
}
