//! `cargo xtask`: mmuscope's developer tasks.
//!
//! `setup` installs the toolchain (Debian packages through apt, bpf-linker into `.tools/`), `build`
//! builds the workspace, `run` builds and starts the agent, `test` runs the test tiers. `build`,
//! `run` and `test` do the part of the set-up they need first, so a fresh clone needs nothing else.
//!
//! Layout: `cli` (the commands and their dispatch), `commands/` (one file per command, with its
//! flags), `setup/` (the installer), `tiers/` (one file per test tier plus the table and the
//! summary), `bench/` and `vm/` (commands with modules of their own), and small helpers: `workspace`
//! (paths), `toolchain` (which cargo runs what), `process` (running commands), `progress`
//! (the `==>` lines), `privilege` (root and capabilities).

mod bench;
mod cli;
mod commands;
mod fuzz;
mod privilege;
mod process;
mod progress;
mod setup;
mod tiers;
mod toolchain;
mod vm;
mod workspace;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let ws = workspace::Workspace::locate();
    let result = cli.command.run(&ws);
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
