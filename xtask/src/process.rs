//! Running external commands: echo them, stream their output, and turn a failure into an error
//! that names the command and its exit status.

use std::{
    ffi::OsStr,
    process::{Command, Output},
};

use anyhow::{Context, Result, bail};

use crate::toolchain;

/// Runs `cmd` with inherited stdio after echoing it, with the variables it sets, as `$ <command>`.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    println!("$ {}{line}", env_prefix(cmd));
    let status = cmd.status().with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` quietly and returns what it printed, whatever its exit status.
pub fn capture(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| format!("could not start `{}`", describe(cmd)))
}

/// `cmd` as a shell-like line: the program (the host cargo shown as `cargo`) and its arguments.
pub fn describe(cmd: &Command) -> String {
    let program = cmd.get_program();
    let program = if program == toolchain::host_cargo_program() { OsStr::new("cargo") } else { program };
    std::iter::once(program).chain(cmd.get_args()).map(quote).collect::<Vec<_>>().join(" ")
}

/// Where classic tracepoints are attached from (aya, libbpf and bpftrace read it there).
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// A command that runs `program` (arguments added by the caller) in a mount namespace of its own where tracefs is
/// mounted at [`TRACEFS`], mounting it there if needed; exit 97 if it cannot. For tools that need tracefs and cannot
/// mount it themselves (bpftrace, the bench's floor fixture, the agent without CAP_SYS_ADMIN as under the systemd
/// unit, whose `RequiresMountsFor=` makes systemd mount it): a new machine may have none mounted, and this host's
/// own mounts stay as they are.
pub fn with_tracefs(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "slave", "--", "sh", "-c"])
        .arg(format!("mountpoint -q {TRACEFS} || mount -t tracefs tracefs {TRACEFS} || exit 97; exec \"$@\""))
        .arg("with-tracefs")
        .arg(program);
    cmd
}

/// `VAR=value ` for every variable `cmd` sets (not the ones it removes).
fn env_prefix(cmd: &Command) -> String {
    cmd.get_envs().filter_map(|(key, value)| Some(format!("{}={} ", key.to_string_lossy(), quote(value?)))).collect()
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c));
    if plain { word.into_owned() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_only_what_needs_it() {
        let mut cmd = Command::new("/usr/bin/cargo");
        cmd.args(["install", "bpf-linker@0.13.0", "--", "-D warnings", "it's"]);
        assert_eq!(describe(&cmd), r"/usr/bin/cargo install bpf-linker@0.13.0 -- '-D warnings' 'it'\''s'");
        cmd.env("A", "1 2").env_remove("B");
        assert_eq!(env_prefix(&cmd), "A='1 2' ");
    }
}
