//! SIGHUP: the command line is applied again over the config file as it is now ([`super::load_run`]), and the
//! result compared key by key with the settings in force. [`plan`] is pure: it says which changed keys take
//! effect at once ([`LIVE`]) and which need a restart; the service applies the first and logs the second.

use clap::{ArgMatches, CommandFactory};

use crate::cli::Cli;

/// Keys (long flag names) that take effect on SIGHUP without a restart. The web config file
/// (`--web.config.file`'s contents, not its name) is re-read as well, whenever it changes.
pub const LIVE: &[&str] = &["log.level", "web.disable-process-details", "web.health-requires-auth"];

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Changed keys that take effect now.
    pub apply: Vec<String>,
    /// Changed keys that keep their old value until the agent restarts.
    pub needs_restart: Vec<String>,
}

#[cfg(test)]
impl Plan {
    fn is_empty(&self) -> bool {
        self.apply.is_empty() && self.needs_restart.is_empty()
    }
}

/// Compares the `run` settings `old` (in force) and `new` (just loaded), both as [`super::load_run`] returns them.
pub fn plan(old: &ArgMatches, new: &ArgMatches) -> Plan {
    let run = Cli::command();
    let mut out = Plan::default();
    for arg in run.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else { continue };
        if raw(old, id) == raw(new, id) {
            continue;
        }
        if LIVE.contains(&long) { &mut out.apply } else { &mut out.needs_restart }.push(long.to_string());
    }
    out
}

/// The values of `id` as given (defaults included), comparable across two parses.
fn raw(m: &ArgMatches, id: &str) -> Option<Vec<std::ffi::OsString>> {
    m.try_get_raw(id).ok().flatten().map(|values| values.map(ToOwned::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::{super::load_run, *};
    use crate::logging::Level;

    fn load(file: &std::path::Path, extra: &[&str]) -> anyhow::Result<(crate::cli::RunArgs, ArgMatches)> {
        let mut args: Vec<OsString> = ["mmuscope", "run", "--config.file"].iter().map(OsString::from).collect();
        args.push(file.into());
        args.extend(extra.iter().map(OsString::from));
        load_run(&args)
    }

    #[test]
    fn live_keys_apply_and_the_others_need_a_restart() {
        let path = std::env::temp_dir().join(format!("mmuscope-reload-{}.toml", std::process::id()));
        std::fs::write(&path, "[log]\nlevel = \"info\"\n").unwrap();
        let (before, old) = load(&path, &[]).unwrap();
        assert_eq!(before.log.level, Level::Info);
        assert!(plan(&old, &load(&path, &[]).unwrap().1).is_empty(), "nothing changed");

        let text = "max-cgroups = 5\n[log]\nlevel = \"debug\"\nformat = \"json\"\n\
                    [web]\ndisable-process-details = true\nlisten-address = [\"127.0.0.1:19401\"]\n";
        std::fs::write(&path, text).unwrap();
        let (after, new) = load(&path, &[]).unwrap();
        assert_eq!(after.log.level, Level::Debug);
        let p = plan(&old, &new);
        assert_eq!(p.apply, ["web.disable-process-details", "log.level"]);
        assert_eq!(p.needs_restart, ["web.listen-address", "log.format", "max-cgroups"]);

        // The command line still wins: a flag given there does not change whatever the file says.
        let (_, old) = load(&path, &["--log.level", "warn"]).unwrap();
        std::fs::write(&path, "[log]\nlevel = \"error\"\n").unwrap();
        let (now, new) = load(&path, &["--log.level", "warn"]).unwrap();
        assert_eq!(now.log.level, Level::Warn);
        assert!(!plan(&old, &new).apply.contains(&"log.level".to_string()));

        // A broken file is an error (the caller keeps the old settings), not an exit.
        std::fs::write(&path, "[log]\nlevel = \"loud\"\n").unwrap();
        let e = load(&path, &[]).unwrap_err();
        assert!(format!("{e:#}").contains(":2:9: key `log.level`"), "{e:#}");
        let _ = std::fs::remove_file(&path);
    }
}
