//! `cargo xtask`: mmuscope's developer tasks.
//!
//! `setup` installs the toolchain (Debian packages through apt, bpf-linker into `.tools/`), `build`
//! builds the workspace, `run` builds and starts the agent, `test` runs the test tiers. `build`,
//! `run` and `test` do the part of the set-up they need first, so a fresh clone needs nothing else.
//!
//! Layout: `cli` (flags), `commands/` (one file per command), `setup/` (the installer), `tiers/`
//! (one file per test tier plus the table and the summary), and small helpers: `workspace`
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
    let result = match cli.command {
        cli::Command::Setup(args) => commands::setup::run(&ws, &args),
        cli::Command::Build(args) => commands::build::run(&ws, &args),
        cli::Command::Run(args) => commands::run::run(&ws, &args),
        cli::Command::Test(args) => commands::test::run(&ws, &args),
        cli::Command::Docs(args) => commands::docs::run(&ws, &args),
        cli::Command::Vm(args) => vm::run(&ws, &args),
        cli::Command::Fuzz(args) => commands::fuzz::run(&ws, &args),
        cli::Command::Soak(args) => commands::soak::run(&ws, &args),
        cli::Command::Bench(args) => bench::run(&ws, &args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
