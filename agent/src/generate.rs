//! `mmuscope generate DIR` (hidden): the man pages and shell completions, made from the clap definition so that they
//! always match the flags. `cargo xtask docs` writes them to `deploy/man/` and `deploy/completions/`, and the Debian
//! package installs them from there.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Writes `DIR/man/mmuscope.1`, `DIR/man/mmuscope-<command>.1` for each visible subcommand, and
/// `DIR/completions/{mmuscope.bash,_mmuscope,mmuscope.fish}`. Returns the files written, relative to `dir`.
pub fn write(dir: &Path) -> Result<Vec<String>> {
    let mut written = Vec::new();
    let mut put = |rel: String, bytes: Vec<u8>| -> Result<()> {
        let path = dir.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap_or(dir)).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        written.push(rel);
        Ok(())
    };
    // The plain version: the revision and build date would change the page with every commit.
    let mut cmd = Cli::command().version(env!("CARGO_PKG_VERSION")).long_version(None::<&'static str>);
    cmd.build();
    put("man/mmuscope.1".into(), man(&cmd)?)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let name = format!("mmuscope-{}", sub.get_name());
        let page = sub.clone().name(name.clone()).display_name(name.clone());
        put(format!("man/{name}.1"), man(&page)?)?;
    }
    let mut visible = without_hidden_subcommands(&Cli::command());
    for (shell, file) in [(Shell::Bash, "mmuscope.bash"), (Shell::Zsh, "_mmuscope"), (Shell::Fish, "mmuscope.fish")] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut visible, "mmuscope", &mut out);
        put(format!("completions/{file}"), out)?;
    }
    Ok(written)
}

/// `full` without its hidden subcommands (`generate`, `metrics-reference`), which clap_complete would offer.
fn without_hidden_subcommands(full: &clap::Command) -> clap::Command {
    let visible: Vec<clap::Command> = full.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    let mut cmd = clap::Command::new(full.get_name().to_string())
        .args(full.get_arguments().cloned())
        .subcommands(visible)
        .args_conflicts_with_subcommands(true);
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    if let Some(version) = full.get_version() {
        cmd = cmd.version(version.to_string());
    }
    cmd
}

/// One man page. No date in it, so that regenerating it changes nothing unless the flags changed.
fn man(cmd: &clap::Command) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).source(format!("mmuscope {}", env!("CARGO_PKG_VERSION"))).render(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_page_and_completion() {
        let dir = std::env::temp_dir().join(format!("mmuscope-generate-{}", std::process::id()));
        let files = write(&dir).unwrap();
        for want in ["man/mmuscope.1", "man/mmuscope-run.1", "man/mmuscope-check.1", "completions/_mmuscope"] {
            assert!(files.iter().any(|f| f == want), "{want} not in {files:?}");
        }
        assert!(!files.iter().any(|f| f.contains("generate") || f.contains("metrics-reference")), "{files:?}");
        let run = std::fs::read_to_string(dir.join("man/mmuscope-run.1")).unwrap();
        assert!(run.contains("log.level") && run.contains("web.disable\\-process\\-details"), "{run}");
        let bash = std::fs::read_to_string(dir.join("completions/mmuscope.bash")).unwrap();
        assert!(bash.contains("--log.format") && bash.contains("snapshot"), "{bash}");
        let fish = std::fs::read_to_string(dir.join("completions/mmuscope.fish")).unwrap();
        assert!(!fish.contains("generate") && !fish.contains("metrics-reference"), "hidden commands offered: {fish}");
        assert!(fish.contains("-l version"), "{fish}");
        // The copies in deploy/ (what the Debian package installs) are what this build generates.
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        for f in &files {
            let committed = std::fs::read(deploy.join(f)).unwrap_or_default();
            assert!(
                committed == std::fs::read(dir.join(f)).unwrap(),
                "deploy/{f} is out of date with the command line: run `cargo xtask docs` and commit the result"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
