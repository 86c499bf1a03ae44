//! The Debian package: cargo-deb packs the release build (`[package.metadata.deb]` in agent/Cargo.toml); the
//! package is installed on this machine with `dpkg -i`, its `mmuscope check` must work, its installed unit must
//! pass `systemd-analyze verify` and `dpkg --verify`, and `dpkg --purge` must leave nothing named mmuscope behind
//! in /etc, /usr, /lib and /var/lib (unit enablement links and deb-systemd-helper state included).

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use super::{say, tools::Tools};
use crate::{process, workspace::Workspace};

const PACKAGE: &str = "mmuscope";
const SEARCHED: &[&str] = &["/etc", "/usr", "/lib", "/var/lib"];

pub fn check(ws: &Workspace, tools: &Tools) -> Result<()> {
    let installed = process::capture(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]))?;
    if String::from_utf8_lossy(&installed.stdout).contains("installed") {
        bail!("{PACKAGE} is already installed here; this test installs and purges it, so remove it first");
    }
    let deb = build(ws, tools)?;
    let before = leftovers()?;
    let result = install_and_use(&deb);
    let purge = shown(Command::new("dpkg").args(["--purge", PACKAGE]));
    result?;
    purge?;
    let after = leftovers()?;
    let new: Vec<&String> = after.iter().filter(|p| !before.contains(p)).collect();
    if !new.is_empty() {
        bail!("dpkg --purge left behind: {new:?}");
    }
    say(format!("purged: nothing named {PACKAGE} is left in {}", SEARCHED.join(", ")));
    Ok(())
}

/// `cargo deb --no-build` from the release build; returns the .deb (symbols go to a separate -dbgsym .ddeb).
fn build(ws: &Workspace, tools: &Tools) -> Result<PathBuf> {
    let out_dir = ws.target_dir().join("debian");
    let _ = fs::remove_dir_all(&out_dir);
    let mut cmd = Command::new(&tools.cargo_deb);
    cmd.current_dir(&ws.root).args(["-p", PACKAGE, "--no-build", "--dbgsym", "--fast"]);
    process::run(&mut cmd)?;
    let deb = fs::read_dir(&out_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("cargo-deb made no .deb")?;
    shown(Command::new("dpkg-deb").arg("--info").arg(&deb))?;
    let contents = process::capture(Command::new("dpkg-deb").arg("--contents").arg(&deb))?;
    let files: Vec<String> = String::from_utf8_lossy(&contents.stdout)
        .lines()
        .filter(|l| !l.ends_with('/'))
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    say(format!("{} ({:.1} MB) holds: {}", ws.display(&deb), fs::metadata(&deb)?.len() as f64 / 1e6, files.join(" ")));
    Ok(deb)
}

fn install_and_use(deb: &std::path::Path) -> Result<()> {
    shown(Command::new("dpkg").arg("-i").arg(deb))?;
    shown(Command::new("/usr/bin/mmuscope").arg("check"))?;
    let unit = ["/usr/lib/systemd/system/mmuscope.service", "/lib/systemd/system/mmuscope.service"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .context("the package installed no mmuscope.service")?;
    let verify = process::capture(Command::new("systemd-analyze").args(["verify", unit]))?;
    let said = String::from_utf8_lossy(&verify.stdout).to_string() + &String::from_utf8_lossy(&verify.stderr);
    if !verify.status.success() || !said.trim().is_empty() {
        bail!("systemd-analyze verify {unit}: {said}");
    }
    say(format!("systemd-analyze verify {unit} (as installed): no findings"));
    shown(Command::new("dpkg").args(["--verify", PACKAGE]))?;
    say("dpkg --verify: every installed file matches the package");
    Ok(())
}

/// Runs `cmd`, shows its output, fails on a non-zero status.
fn shown(cmd: &mut Command) -> Result<()> {
    let line = process::describe(cmd);
    let out = process::capture(cmd)?;
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    say(format!("$ {line} (exit {}):\n{}", out.status.code().unwrap_or(-1), said.trim_end()));
    if !out.status.success() {
        bail!("`{line}` failed ({})", out.status);
    }
    Ok(())
}

/// Paths named like the package under [`SEARCHED`].
fn leftovers() -> Result<Vec<String>> {
    let out = process::capture(Command::new("find").args(SEARCHED).args(["-xdev", "-name", &format!("*{PACKAGE}*")]))?;
    let mut found: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    found.sort();
    Ok(found)
}
