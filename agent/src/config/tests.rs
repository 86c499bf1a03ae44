use std::{ffi::OsString, path::PathBuf};

use clap::CommandFactory;

use super::*;
use crate::cli::{Command, RunArgs};

/// The documented default file shipped in the Debian package and the DaemonSet.
const DEFAULT_FILE: &str = include_str!("../../../deploy/systemd/mmuscope.toml");

fn file_with(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("mmuscope-config-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn run_args(args: &[&str]) -> Result<RunArgs> {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    match parse_from(&args)? {
        Cli { command: Some(Command::Run(run)), .. } => Ok(run),
        Cli { command: None, run } => Ok(run),
        _ => unreachable!(),
    }
}

/// RunArgs without the config path, for comparing what a file changed.
fn shown(mut args: RunArgs) -> String {
    args.config_file = None;
    format!("{args:?}")
}

#[test]
fn the_default_file_documents_every_flag_with_its_default() {
    let path = file_with("default", DEFAULT_FILE);
    let from_file = run_args(&["mmuscope", "run", "--config.file", path.to_str().unwrap()]).unwrap();
    assert_eq!(shown(from_file), shown(run_args(&["mmuscope", "run"]).unwrap()));
    // Each key is documented by a comment starting `# --flag:`; keys without a default are commented out.
    let run = Cli::command().find_subcommand("run").unwrap().clone();
    for arg in run.get_arguments().filter(|a| a.get_id() != CONFIG_FILE_ID) {
        let Some(long) = arg.get_long() else { continue };
        assert!(DEFAULT_FILE.contains(&format!("# --{long}: ")), "deploy/systemd/mmuscope.toml lacks `# --{long}: `");
    }
}

#[test]
fn the_command_line_wins_and_the_file_beats_defaults() {
    let path = file_with("override", "max-cgroups = 7\n[web]\nlisten-address = [\"127.0.0.1:1\", \"[::1]:2\"]\n");
    let path = path.to_str().unwrap();
    let run = run_args(&["mmuscope", "--config.file", path, "--max-cgroups", "9"]).unwrap();
    assert_eq!(run.cgroups.max_cgroups, 9);
    assert_eq!(run.listen.iter().map(ToString::to_string).collect::<Vec<_>>(), ["127.0.0.1:1", "[::1]:2"]);
    let run = run_args(&["mmuscope", "run", "--config.file", path, "--web.listen-address", "127.0.0.1:3"]).unwrap();
    assert_eq!((run.cgroups.max_cgroups, run.listen.len()), (7, 1));
}

#[test]
fn errors_name_file_line_and_key() {
    let err = |text: &str| {
        let path = file_with("bad", text);
        let e = run_args(&["mmuscope", "run", "--config.file", path.to_str().unwrap()]).unwrap_err();
        (format!("{e:#}"), path.display().to_string())
    };
    let (e, path) = err("# x\n[web]\nlisten-adress = [\"127.0.0.1:1\"]\n");
    assert!(e.starts_with(&format!("{path}:3:1: unknown key `web.listen-adress`")), "{e}");
    let (e, path) = err("\nmax-cgroups = \"many\"\n");
    assert!(e.starts_with(&format!("{path}:2:15: key `max-cgroups`: ")), "{e}");
    assert!(e.contains("many"), "{e}");
    let (e, _) = err("[cgroups]\ndeleted-ttl = 2024-01-01\n");
    assert!(e.contains(":2:15: key `cgroups.deleted-ttl`: a datetime is not a valid value here"), "{e}");
    let (e, path) = err("max-cgroups = = 3\n");
    assert!(e.starts_with(&format!("{path}: TOML parse error at line 1")), "{e}");
    let (e, _) = err("[config]\nfile = \"/x\"\n");
    assert!(e.contains(":2:1: key `config.file` cannot be set in a config file"), "{e}");
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let e = run_args(&["mmuscope", "run", "--config.file", "/nonexistent/mmuscope.toml"]).unwrap_err();
    assert!(format!("{e:#}").starts_with("reading config file /nonexistent/mmuscope.toml"), "{e:#}");
}

#[test]
fn other_commands_ignore_config() {
    let args: Vec<OsString> = ["mmuscope", "check", "--json"].iter().map(OsString::from).collect();
    assert!(matches!(parse_from(&args).unwrap().command, Some(Command::Check(_))));
}
