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
