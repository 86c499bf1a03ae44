//! Logging to stderr, following the Prometheus promslog convention: `--log.level` (debug, info, warn, error) and
//! `--log.format` (logfmt, the default, or json). `MMUSCOPE_LOG`, when set, is a tracing filter (e.g.
//! `info,mmuscope::web=debug`) that overrides `--log.level`, for per-module levels.
//!
//! The level can change while the agent runs ([`set_level`], on SIGHUP); the format is fixed at start-up.

use std::sync::OnceLock;

use tracing_subscriber::{EnvFilter, Layer, Registry, layer::SubscriberExt, reload, util::SubscriberInitExt};

/// The environment variable with a fine-grained filter that overrides `--log.level`.
pub const ENV_FILTER: &str = "MMUSCOPE_LOG";

/// In order of severity (`Debug < Error`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `ts=… level=info target=… message="…" key=value`, one line per event.
    #[default]
    Logfmt,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's fields.
    Json,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// Only log messages with this severity or above: debug, info, warn, error. Changes on SIGHUP without a
    /// restart. MMUSCOPE_LOG (a tracing filter such as `info,mmuscope::web=debug`) overrides it when set.
    #[arg(long = "log.level", value_enum, value_name = "LEVEL", default_value_t = Level::Info)]
    pub level: Level,
    /// Format of the log lines on stderr: logfmt or json.
    #[arg(long = "log.format", value_enum, value_name = "FORMAT", default_value_t = Format::Logfmt)]
    pub format: Format,
}

type FilterHandle = reload::Handle<EnvFilter, Registry>;

struct Installed {
    filter: FilterHandle,
    /// The `MMUSCOPE_LOG` filter in force, if the variable was set (then `--log.level` is not used).
    env_override: Option<String>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// The filter for `level`, or `MMUSCOPE_LOG`'s when it is set and valid (an invalid one is reported on stderr and
/// ignored).
fn filter(level: Level, env: Option<&str>) -> (EnvFilter, Option<String>) {
    if let Some(directives) = env.filter(|s| !s.trim().is_empty()) {
        match EnvFilter::try_new(directives) {
            Ok(f) => return (f, Some(directives.to_string())),
            Err(e) => eprintln!("mmuscope: ignoring {ENV_FILTER}={directives:?}: {e}"),
        }
    }
    (EnvFilter::new(level.as_str()), None)
}

/// Installs the global subscriber (and the `log` → `tracing` bridge that carries aya-log records). Later calls do
/// nothing.
pub fn init(args: &LogArgs) {
    let env = std::env::var(ENV_FILTER).ok();
    let (filter, env_override) = filter(args.level, env.as_deref());
    let (filter, handle) = reload::Layer::new(filter);
    let output = match args.format {
        Format::Logfmt => tracing_logfmt::builder().with_span_path(false).layer().with_writer(std::io::stderr).boxed(),
        Format::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    if tracing_subscriber::registry().with(filter).with(output).try_init().is_ok() {
        let _ = INSTALLED.set(Installed { filter: handle, env_override });
    }
}

/// Switches the level at run time. Returns what is in force afterwards, for the log line saying so.
pub fn set_level(level: Level) -> Result<String, String> {
    let installed = INSTALLED.get().ok_or("logging is not initialised")?;
    if let Some(env) = &installed.env_override {
        return Ok(format!("{ENV_FILTER}={env} (it overrides log.level)"));
    }
    installed.filter.reload(EnvFilter::new(level.as_str())).map_err(|e| e.to_string())?;
    Ok(level.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_overrides_the_level_and_a_bad_one_is_ignored() {
        assert_eq!(filter(Level::Warn, None).0.to_string(), "warn");
        assert_eq!(filter(Level::Warn, Some("  ")).1, None);
        let (f, env) = filter(Level::Warn, Some("info,mmuscope::web=debug"));
        assert_eq!(env.as_deref(), Some("info,mmuscope::web=debug"));
        assert!(f.to_string().contains("mmuscope::web=debug"), "{f}");
        let (f, env) = filter(Level::Error, Some("mmuscope=notalevel"));
        assert_eq!((f.to_string(), env), ("error".to_string(), None));
    }
}
