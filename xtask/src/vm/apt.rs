//! A private apt configuration under `target/vm/apt/` (own sources, lists, cache and status,
//! selected with `APT_CONFIG=`), so resolving and downloading kernel packages never touches the
//! machine's apt state and needs no root. The archive URIs come from the machine's own sources
//! (`apt_sources`); only the suites that carry the kernels of the matrix are listed, with
//! `Targets: Packages` so `apt-get update` fetches nothing else (~22 MB, a few seconds).
//!
//! The machine's `apt.conf.d` still applies (proxies and similar network settings).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};

use super::{apt_sources, exec, say};
use crate::workspace::Workspace;

/// Lists younger than this are reused without `apt-get update`.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const UPDATE_LIMIT: Duration = Duration::from_secs(300);
const QUERY_LIMIT: Duration = Duration::from_secs(120);
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(1200);
/// The architecture of the guests (`qemu-system-x86_64`).
pub const ARCH: &str = "amd64";

/// A suite of the private sources and the archive it lives in.
pub struct Suite {
    pub name: &'static str,
    pub security: bool,
}

/// The suites that carry the kernels of the matrix: 5.10 (bullseye, bullseye-security), 6.1
/// (bookworm-security), 6.12 (bookworm-backports, trixie, trixie-security) and the newest series (sid).
pub const SUITES: &[Suite] = &[
    Suite { name: "bullseye", security: false },
    Suite { name: "bullseye-security", security: true },
    Suite { name: "bookworm-security", security: true },
    Suite { name: "bookworm-backports", security: false },
    Suite { name: "trixie", security: false },
    Suite { name: "trixie-security", security: true },
    Suite { name: "sid", security: false },
];

/// One `apt-cache madison` row: a package version and the suite that has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub package: String,
    pub version: String,
    pub archive: String,
    pub suite: String,
}

/// The private configuration, written and ready to use.
pub struct PrivateApt {
    root: PathBuf,
}

impl PrivateApt {
    /// Writes the configuration (from this machine's sources) under `target/vm/apt/`.
    pub fn prepare(ws: &Workspace) -> Result<Self> {
        let archives = apt_sources::discover()?;
        let root = ws.target_dir().join("vm/apt");
        for dir in ["sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial", "state"] {
            fs::create_dir_all(root.join(dir)).with_context(|| format!("creating {}", root.join(dir).display()))?;
        }
        let status = root.join("state/status");
        if !status.exists() {
            fs::write(&status, "").with_context(|| format!("writing {}", status.display()))?;
        }
        write_if_changed(&root.join("apt.conf"), &config(&root))?;
        let sources = sources(&archives);
        if write_if_changed(&root.join("sources.list.d/mmuscope-vm.sources"), &sources)? {
            // New sources: the old lists (if any) no longer describe them.
            let _ = fs::remove_file(root.join(STAMP));
            say(format!(
                "private apt sources: {} and {} (from {})",
                archives.main.uri, archives.security.uri, archives.found_in
            ));
        }
        Ok(Self { root })
    }

    /// `apt-get update` when forced, never done, or older than a day.
    pub fn update_if_stale(&self, force: bool) -> Result<()> {
        let age = fs::metadata(self.root.join(STAMP))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        match age {
            Some(age) if !force && age < LISTS_MAX_AGE => {
                say(format!("apt lists are {} min old, reusing them", age.as_secs() / 60));
                Ok(())
            }
            _ => self.update(),
        }
    }

    fn update(&self) -> Result<()> {
        let names: Vec<_> = SUITES.iter().map(|s| s.name).collect();
        say(format!("apt-get update (private config) for {}", names.join(", ")));
        exec::run_shown(self.apt("apt-get").arg("update"), UPDATE_LIMIT)
            .context("updating the private apt lists (is the Debian archive reachable?)")?;
        fs::write(self.root.join(STAMP), "").context("writing the apt update stamp")?;
        Ok(())
    }

    /// Every version of `package` in the private suites. No version at all is an error quoting
    /// what apt said.
    pub fn madison(&self, package: &str) -> Result<Vec<Candidate>> {
        let out = exec::output_any_status(self.apt("apt-cache").args(["madison", package]), QUERY_LIMIT)?;
        let found = parse_madison(&String::from_utf8_lossy(&out.stdout));
        if found.is_empty() {
            let suites: Vec<_> = SUITES.iter().map(|s| s.name).collect();
            let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let said = if said.is_empty() { "listed no version".to_string() } else { format!("said: {said}") };
            bail!("package {package} not found in {}: `apt-cache madison {package}` {said}", suites.join(", "));
        }
        Ok(found)
    }

    /// `apt-cache show package=version` as a list of `(field, value)`.
    pub fn show(&self, package: &str, version: &str) -> Result<Vec<(String, String)>> {
        let spec = format!("{package}={version}");
        let out = exec::output(self.apt("apt-cache").args(["show", &spec]), QUERY_LIMIT)?;
        let text = String::from_utf8_lossy(&out.stdout);
        // Several identical records are possible (one per suite); the first one is enough.
        let record = text.split("\n\n").next().unwrap_or("");
        Ok(record
            .lines()
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect())
    }

    /// `apt-get download package=version` into `dir`; returns the `.deb`.
    pub fn download(&self, package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let spec = format!("{package}={version}");
        let mut cmd = self.apt("apt-get");
        cmd.args(["download", &spec]).current_dir(dir);
        exec::run_shown(&mut cmd, DOWNLOAD_LIMIT).with_context(|| format!("downloading {spec}"))?;
        let prefix = format!("{package}_");
        let deb = fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(&prefix) && name.ends_with(".deb")
        });
        deb.with_context(|| {
            format!("`apt-get download {spec}` succeeded but left no {prefix}*.deb in {}", dir.display())
        })
    }

    fn apt(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", self.root.join("apt.conf")).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }
}

/// Written after a successful `apt-get update`; its mtime is the lists' age.
const STAMP: &str = "lists/.mmuscope-updated";

fn config(root: &Path) -> String {
    let r = root.display();
    format!(
        "// Private apt configuration of mmuscope's VM harness (`cargo xtask vm`); generated, do not edit.\n\
         Dir::Etc::SourceList \"/dev/null\";\n\
         Dir::Etc::SourceParts \"{r}/sources.list.d\";\n\
         Dir::Etc::Preferences \"/dev/null\";\n\
         Dir::Etc::PreferencesParts \"{r}/preferences.d\";\n\
         Dir::State \"{r}/state\";\n\
         Dir::State::Lists \"{r}/lists\";\n\
         Dir::State::status \"{r}/state/status\";\n\
         Dir::Cache \"{r}/cache\";\n\
         APT::Architecture \"{ARCH}\";\n\
         APT::Architectures {{ \"{ARCH}\"; }};\n\
         Acquire::Languages \"none\";\n\
         // Downloads land in our own directories, which apt's _apt sandbox user may not enter.\n\
         APT::Sandbox::User \"root\";\n"
    )
}

/// One deb822 stanza per archive, `main` only, Packages indexes only.
fn sources(archives: &apt_sources::Archives) -> String {
    let mut out = String::from("# Generated by `cargo xtask vm` from this machine's apt sources.\n");
    for (archive, security) in [(&archives.main, false), (&archives.security, true)] {
        let suites: Vec<_> = SUITES.iter().filter(|s| s.security == security).map(|s| s.name).collect();
        out.push_str(&format!(
            "\nTypes: deb\nURIs: {}\nSuites: {}\nComponents: main\nArchitectures: {ARCH}\nTargets: Packages\n{}\n",
            archive.uri,
            suites.join(" "),
            apt_sources::signed_by_field(archive)
        ));
    }
    out
}

/// Writes `text` unless the file already holds it; whether it wrote. Through a new file renamed over the old one:
/// a kernel cache seeded with `cp -al` from another worktree shares this file's inode, and writing it in place
/// would rewrite the other worktree's configuration too (seen: one worktree's apt.conf pointing at another's state).
fn write_if_changed(path: &Path, text: &str) -> Result<bool> {
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    fs::write(&tmp, text).with_context(|| format!("writing {}", Path::new(&tmp).display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", Path::new(&tmp).display(), path.display()))?;
    Ok(true)
}

/// `name | version | uri suite/component arch Packages` rows.
fn parse_madison(text: &str) -> Vec<Candidate> {
    text.lines()
        .filter_map(|line| {
            let mut cols = line.split('|').map(str::trim);
            let (package, version, source) = (cols.next()?, cols.next()?, cols.next()?);
            let mut words = source.split_whitespace();
            let (archive, dist) = (words.next()?, words.next()?);
            let suite = dist.split('/').next()?;
            Some(Candidate {
                package: package.to_string(),
                version: version.to_string(),
                archive: archive.to_string(),
                suite: suite.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn madison_rows() {
        let text = "linux-image-amd64 |   7.2.13-1 | http://deb.debian.org/debian sid/main amd64 Packages\n\
                    linux-image-amd64 |  6.1.192-2 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n";
        let rows = parse_madison(text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].version, "6.1.192-2");
        assert_eq!(rows[1].suite, "bookworm-security");
        assert_eq!(rows[1].archive, "http://deb.debian.org/debian-security");
    }

    #[test]
    fn sources_split_suites_by_archive() {
        let archive = |uri: &str| apt_sources::Archive { uri: uri.into(), signed_by: "/k.gpg".into() };
        let text = sources(&apt_sources::Archives {
            main: archive("http://m/debian"),
            security: archive("http://m/debian-security"),
            found_in: String::new(),
        });
        assert!(text.contains("URIs: http://m/debian\nSuites: bullseye bookworm-backports trixie sid\n"), "{text}");
        assert!(
            text.contains(
                "URIs: http://m/debian-security\nSuites: bullseye-security bookworm-security trixie-security\n"
            )
        );
        assert_eq!(text.matches("Targets: Packages\nSigned-By: /k.gpg\n").count(), 2);
    }
}
