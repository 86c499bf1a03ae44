//! `--config.file`: a TOML file whose keys are the long flags of `mmuscope run`, so the file and the command line
//! can never disagree about names, types or validation (clap validates both).
//!
//! `[web] listen-address = ["0.0.0.0:9476"]` is `--web.listen-address 0.0.0.0:9476`; a top-level key is a flag
//! without a dot (`max-cgroups = 1000`). A flag given on the command line wins over the file, which wins over the
//! built-in default. Errors name the file, the line and the key. The documented default file is
//! `deploy/systemd/mmuscope.toml` (installed as /etc/mmuscope/mmuscope.toml).

pub mod keys;
pub mod reload;

use std::{ffi::OsString, path::Path};

use anyhow::{Context, Result, bail};
use clap::{ArgMatches, CommandFactory, FromArgMatches, parser::ValueSource};

use crate::cli::Cli;

/// The id of the `--config.file` argument (the field name in `cli::RunArgs`).
const CONFIG_FILE_ID: &str = "config_file";
/// Exit status for a bad configuration (the same as clap's usage errors).
pub const EXIT_CONFIG: i32 = 2;

/// A configuration error found after the command line was parsed (the web config file): the agent exits with
/// [`EXIT_CONFIG`], as for a bad flag or config file.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BadConfig(#[from] pub anyhow::Error);

/// The exit status for `e`: [`EXIT_CONFIG`] for a [`BadConfig`] anywhere in its chain, else 1.
pub fn exit_status(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| c.is::<BadConfig>()) { EXIT_CONFIG } else { 1 }
}

/// Parses the command line, merged with the config file if `run` names one. Exits like clap on `--help` and
/// usage errors, and with status 2 and `FILE:LINE:COLUMN: key …` on a bad config file.
pub fn parse_cli() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    match parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("mmuscope: error: {e:#}");
            std::process::exit(EXIT_CONFIG);
        }
    }
}

fn parse_from(args: &[OsString]) -> Result<Cli> {
    let matches = with_file(args, Cli::command().get_matches_from(args))?;
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

/// The settings of `run` as the command line and the config file give them now, and the matches they came from
/// (for [`reload::plan`]). Never exits: on SIGHUP a bad file is an error to log, not a reason to stop.
pub fn load_run(args: &[OsString]) -> Result<(crate::cli::RunArgs, ArgMatches)> {
    let matches = with_file(args, Cli::command().try_get_matches_from(args)?)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let run = match cli.command {
        None => cli.run,
        Some(crate::cli::Command::Run(run)) => run,
        Some(_) => bail!("not the `run` command"),
    };
    let run_matches = run_level(&matches).map(|(m, _)| m.clone()).unwrap_or(matches);
    Ok((run, run_matches))
}

/// `run`'s own matches and command: the top level (run is the default) or the `run` subcommand.
fn run_level(matches: &ArgMatches) -> Option<(&ArgMatches, clap::Command)> {
    match matches.subcommand() {
        None => Some((matches, Cli::command())),
        Some(("run", sub)) => Some((sub, Cli::command().find_subcommand("run").expect("run is a subcommand").clone())),
        Some(_) => None,
    }
}

/// `matches` with the config file applied, if `run` names one.
fn with_file(args: &[OsString], matches: ArgMatches) -> Result<ArgMatches> {
    let Some((run_matches, run_command)) = run_level(&matches) else { return Ok(matches) };
    let Some(file) = run_matches.get_one::<std::path::PathBuf>(CONFIG_FILE_ID) else {
        return Ok(matches);
    };
    let extra = flags_from_file(file, &run_command, run_matches)?;
    let merged: Vec<OsString> = args.iter().cloned().chain(extra.into_iter().map(OsString::from)).collect();
    Cli::command().try_get_matches_from(merged).context("applying the config file")
}

/// The `--flag=value` arguments `file` adds: each key validated against `run` (so an error can name its line),
/// keys whose flag is on the command line left out.
fn flags_from_file(file: &Path, run: &clap::Command, given: &ArgMatches) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading config file {}", file.display()))?;
    let at = |span: std::ops::Range<usize>| {
        let (line, column) = keys::line_column(&text, span.start);
        format!("{}:{line}:{column}", file.display())
    };
    let mut out = Vec::new();
    for entry in keys::flatten(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))? {
        let key = &entry.key;
        let Some(arg) = run.get_arguments().find(|a| a.get_long() == Some(key.as_str())) else {
            // `flag = { a = 1 }` flattens to `flag.a`: say that the flag got a table, not that `flag.a` is unknown.
            if let Some(flag) = known_prefix(run, key) {
                bail!("{}: key `{flag}`: a table is not a valid value here", at(entry.span));
            }
            bail!("{}: unknown key `{key}` (keys are the long flags of `mmuscope run --help`)", at(entry.span));
        };
        if entry.is_bool() && arg.get_action().takes_values() {
            bail!("{}: key `{key}`: a boolean is not a valid value here", at(entry.value_span));
        }
        if arg.get_id() == CONFIG_FILE_ID || !arg.get_action().takes_values() && !entry.is_bool() {
            bail!("{}: key `{key}` cannot be set in a config file", at(entry.span));
        }
        let flags =
            entry.to_flags().map_err(|why| anyhow::anyhow!("{}: key `{key}`: {why}", at(entry.value_span.clone())))?;
        if let Err(e) = run.clone().no_binary_name(true).try_get_matches_from(&flags) {
            let why = e.kind().as_str().unwrap_or("invalid value");
            let detail = e.to_string();
            let detail = detail.lines().next().unwrap_or_default().trim_start_matches("error: ");
            bail!("{}: key `{key}`: {why}: {detail}", at(entry.value_span));
        }
        // The command line (and the environment, for a flag that reads one) wins over the file.
        let source = given.value_source(arg.get_id().as_str());
        if matches!(source, Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        out.extend(flags);
    }
    Ok(out)
}

/// The longest proper prefix of the dotted `key` that is a long flag of `run`.
fn known_prefix<'k>(run: &clap::Command, key: &'k str) -> Option<&'k str> {
    key.rmatch_indices('.').map(|(i, _)| &key[..i]).find(|p| run.get_arguments().any(|a| a.get_long() == Some(*p)))
}

#[cfg(test)]
mod tests;
