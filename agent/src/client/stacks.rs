//! `mmuscope stacks`: asks a running agent for kernel stacks (`/api/v1/stacks`) and writes them as folded stacks,
//! an SVG flame graph or JSON.

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::Args;

use super::{Client, ClientArgs};

/// `mmuscope stacks`.
#[derive(Args, Debug, Clone)]
pub struct StacksArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// How long the agent captures, in seconds (at most 60).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=crate::api::MAX_STACK_SECONDS))]
    pub seconds: u64,
    /// Only events of this owner cgroup: its id or its path (e.g. /system.slice/libvirtd.service).
    #[arg(long, value_name = "ID|PATH")]
    pub cgroup: Option<String>,
    /// Kinds to capture: all, or a comma-separated list of invalidation, double_notification, fork_copy.
    #[arg(long, value_name = "KINDS", default_value = "all")]
    pub kind: String,
    /// Only invalidations of these events (comma-separated, as in the `event` label, e.g. clear,unmap); needs
    /// --kind invalidation.
    #[arg(long, value_name = "EVENTS")]
    pub event: Option<String>,
    /// Only invalidations of these causes (comma-separated, as in the `cause` label, e.g. madvise,reclaim); needs
    /// --kind invalidation.
    #[arg(long, value_name = "CAUSES")]
    pub cause: Option<String>,
    /// Output format: folded stacks (text), an SVG flame graph, or the API's JSON.
    #[arg(long, default_value = "folded", value_parser = ["folded", "svg", "json"])]
    pub format: String,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// The query string of a request, each value percent-encoded.
pub fn query(args: &StacksArgs) -> String {
    let mut q = format!("seconds={}&kind={}&format={}", args.seconds, encode(&args.kind), args.format);
    for (name, value) in [("cgroup", &args.cgroup), ("event", &args.event), ("cause", &args.cause)] {
        if let Some(v) = value {
            q.push_str(&format!("&{name}={}", encode(v)));
        }
    }
    q
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn run(args: &StacksArgs) -> Result<i32> {
    let client = Client::new(&args.client)?;
    eprintln!("mmuscope stacks: capturing for {} s at {} ...", args.seconds, client.base());
    // The answer comes when the capture ends.
    let body = client.get_bytes(&format!("/api/v1/stacks?{}", query(args)), Duration::from_secs(args.seconds + 30))?;
    match &args.output {
        Some(path) => std::fs::write(path, &body).with_context(|| format!("writing {}", path.display()))?,
        None => std::io::stdout().lock().write_all(&body)?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: StacksArgs,
    }

    #[test]
    fn query_encodes_paths_and_checks_ranges() {
        let t = T::try_parse_from(["t", "--seconds", "5", "--cgroup", "/a b/c", "--kind", "invalidation"]).unwrap();
        assert_eq!(query(&t.a), "seconds=5&kind=invalidation&format=folded&cgroup=/a%20b/c");
        let t = T::try_parse_from(["t", "--kind", "invalidation", "--cause", "madvise,reclaim", "--event", "clear"])
            .unwrap();
        assert_eq!(query(&t.a), "seconds=10&kind=invalidation&format=folded&event=clear&cause=madvise,reclaim");
        assert!(T::try_parse_from(["t", "--seconds", "61"]).is_err());
        assert!(T::try_parse_from(["t", "--format", "png"]).is_err());
    }
}
