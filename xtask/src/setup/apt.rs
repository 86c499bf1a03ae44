//! Debian packages: which are installed (`dpkg-query`) and installing the missing ones
//! (`apt-get update` + `apt-get install -y --no-install-recommends`, non-interactive).

use std::{collections::BTreeSet, process::Command};

use anyhow::{Context, Result};

use crate::process;

/// The subset of `names` that dpkg reports as installed.
pub fn installed(names: &[&str]) -> Result<BTreeSet<String>> {
    let mut cmd = Command::new("dpkg-query");
    cmd.args(["-W", "-f=${Package}\t${Status}\n"]).args(names);
    // Exits 1 when a name is unknown to dpkg; that name is simply absent from the output.
    let output = process::capture(&mut cmd).context(
        "the automatic set-up needs a Debian-like system (dpkg-query, apt-get); \
         install the packages listed by `cargo xtask setup --check` by other means",
    )?;
    Ok(parse_installed(&String::from_utf8_lossy(&output.stdout)))
}

/// Names whose status is `<want> ok installed` in `dpkg-query -W -f='${Package}\t${Status}\n'`.
fn parse_installed(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, status)| status.ends_with(" ok installed"))
        .map(|(name, _)| name.to_string())
        .collect()
}

pub fn update() -> Result<()> {
    process::run(apt_get().arg("update"))
}

pub fn install(names: &[&str]) -> Result<()> {
    process::run(apt_get().args(["install", "-y", "--no-install-recommends"]).args(names))
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fully_installed_packages_count() {
        let output = "jq\tinstall ok installed\n\
                      bpftool\tdeinstall ok config-files\n\
                      prometheus\thold ok installed\n\
                      llvm-22-dev\tinstall ok unpacked\n";
        let got: Vec<_> = parse_installed(output).into_iter().collect();
        assert_eq!(got, ["jq", "prometheus"]);
    }
}
