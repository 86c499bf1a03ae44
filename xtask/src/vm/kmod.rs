//! The project's test kernel modules (`tests/kmod/`), built per guest kernel with kbuild.
//!
//! For a cached kernel, the kernel's own Debian headers — `linux-headers-<release>`, the
//! `linux-headers-…-common` and `linux-kbuild-…` packages it depends on — are downloaded through the
//! private apt configuration and unpacked with `dpkg-deb -x` into `<kernel cache>/headers/` (never
//! installed). Their `Makefile` includes the common tree by its absolute `/usr/src/…` path; the copy
//! here points it at the unpacked one. The module is then built with the host's `make` and `gcc`
//! (`cargo xtask setup` installs both) into `<kernel cache>/kmod/`, without module BTF (that would
//! need pahole; nothing hooks the module's own functions).
//!
//! A kernel built with a compiler this host does not have is built with the host's `gcc` when that one is
//! newer (bullseye's 5.10 names gcc-10: gcc-12 takes every flag an older kernel passes, and a module's
//! `vermagic` does not name the compiler). When the kernel's compiler is newer (trixie's 6.12 with gcc-14 on a
//! bookworm host with gcc-12: kbuild calls `x86_64-linux-gnu-gcc-14`, and gcc-12 rejects its flags such as
//! `-fmin-function-alignment`) the kernel cannot have the module: [`build`] then says why, and the caller leaves
//! that kernel's module scenarios out, visibly.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};

use super::{apt::PrivateApt, exec, kernels::CachedKernel, say};
use crate::workspace::Workspace;

/// The HMM mirror test module: its source directory below the workspace and its object name.
pub const MIRROR: (&str, &str) = ("tests/kmod/mmuscope_mirror", "mmuscope_mirror.ko");
const HEADERS_DIR: &str = "headers";
const KMOD_DIR: &str = "kmod";
const LIMIT: Duration = Duration::from_secs(600);

/// Why a module cannot be built for a kernel (the scenarios that need it are skipped), or the error
/// of a build that should have worked.
#[derive(Debug)]
pub enum Unbuildable {
    /// The headers need a compiler this host lacks.
    Compiler(String),
    /// Anything else: headers not found, download or build failure.
    Failed(anyhow::Error),
}

impl std::fmt::Display for Unbuildable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unbuildable::Compiler(why) => f.write_str(why),
            Unbuildable::Failed(err) => write!(f, "{err:#}"),
        }
    }
}

/// Builds the module `(source dir, object)` for `kernel`; returns the `.ko`.
pub fn build(ws: &Workspace, kernel: &CachedKernel, module: (&str, &str)) -> Result<PathBuf, Unbuildable> {
    let release = &kernel.meta.release;
    let headers = headers(ws, kernel).map_err(Unbuildable::Failed)?;
    let tree = headers.join("usr/src").join(format!("linux-headers-{release}"));
    let named = compiler(&tree).map_err(Unbuildable::Failed)?;
    let cc = choose_compiler(&named, on_path(&named), host_gcc_major()).map_err(Unbuildable::Compiler)?;
    let (source, object) = module;
    let out = kernel.dir.join(KMOD_DIR);
    let build = out.join("build");
    let _ = fs::remove_dir_all(&build);
    fs::create_dir_all(&build).map_err(|e| Unbuildable::Failed(e.into()))?;
    for entry in fs::read_dir(ws.root.join(source)).map_err(|e| Unbuildable::Failed(e.into()))? {
        let path = entry.map_err(|e| Unbuildable::Failed(e.into()))?.path();
        if path.is_file() {
            fs::copy(&path, build.join(path.file_name().expect("a file")))
                .map_err(|e| Unbuildable::Failed(e.into()))?;
        }
    }
    if cc == named {
        say(format!("building {object} for {release} with kbuild ({cc})"));
    } else {
        say(format!(
            "building {object} for {release} with kbuild and this host's {cc} ({release}'s headers name {named}, which this host lacks; a newer gcc takes an older kernel's flags)"
        ));
    }
    // No BTF for the module (`CONFIG_DEBUG_INFO_BTF_MODULES` off for this build): it would need pahole, and the
    // scenarios hook only kernel functions, never the module's.
    let made = exec::output(
        Command::new("make")
            .arg("-C")
            .arg(&tree)
            .arg(format!("M={}", build.display()))
            .arg(format!("CC={cc}"))
            .arg("CONFIG_DEBUG_INFO_BTF_MODULES=")
            .arg("modules"),
        LIMIT,
    );
    if let Err(err) = made {
        return Err(Unbuildable::Failed(err.context(format!("building {object} for {release}"))));
    }
    let ko = out.join(object);
    fs::copy(build.join(object), &ko).map_err(|e| Unbuildable::Failed(e.into()))?;
    Ok(ko)
}

/// The unpacked headers of `kernel` (downloaded once per cache entry).
fn headers(ws: &Workspace, kernel: &CachedKernel) -> Result<PathBuf> {
    let release = &kernel.meta.release;
    let dir = kernel.dir.join(HEADERS_DIR);
    let tree = dir.join("usr/src").join(format!("linux-headers-{release}"));
    if tree.join("Makefile").is_file() && dir.join(".complete").is_file() {
        return Ok(dir);
    }
    let apt = PrivateApt::prepare(ws)?;
    apt.update_if_stale(false)?;
    let package = format!("linux-headers-{release}");
    let version = &kernel.meta.version;
    let fields =
        apt.show(&package, version).with_context(|| format!("{package} {version} in the private apt lists"))?;
    let depends = fields.iter().find(|(k, _)| k == "Depends").map_or("", |(_, v)| v.as_str());
    let mut packages = vec![package.clone()];
    packages.extend(header_parts(depends));
    let work = ws.target_dir().join("vm/tmp").join(format!("headers-{release}"));
    let _ = fs::remove_dir_all(&work);
    let _ = fs::remove_dir_all(&dir);
    for p in &packages {
        // The parts are pinned by the image's version (`= 6.1.192-3`, `>= 6.1.192-3`): the same version.
        say(format!("downloading {p} {version}"));
        let deb = apt.download(p, version, &work)?;
        exec::output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir), LIMIT)?;
    }
    let makefile = tree.join("Makefile");
    let text = fs::read_to_string(&makefile).with_context(|| format!("{} has no Makefile", tree.display()))?;
    let local = format!("include {}/", dir.join("usr/src").display());
    fs::write(&makefile, text.replace("include /usr/src/", &local))?;
    fs::write(dir.join(".complete"), packages.join("\n") + "\n")?;
    let _ = fs::remove_dir_all(&work);
    Ok(dir)
}

/// `linux-headers-*-common` and `linux-kbuild-*` among a headers package's `Depends`.
fn header_parts(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|d| d.split_whitespace().next())
        .filter(|n| (n.starts_with("linux-headers-") && n.ends_with("-common")) || n.starts_with("linux-kbuild-"))
        .map(str::to_string)
        .collect()
}

/// The compiler the kernel was built with, which kbuild calls for modules too: the first word of the
/// tree's `CONFIG_CC_VERSION_TEXT` (`gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0`).
fn compiler(tree: &Path) -> Result<String> {
    let file = tree.join(".config");
    let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    cc_of_config(&text).with_context(|| format!("{} has no CONFIG_CC_VERSION_TEXT", file.display()))
}

fn cc_of_config(config: &str) -> Option<String> {
    let value = config.lines().find_map(|l| l.strip_prefix("CONFIG_CC_VERSION_TEXT="))?;
    value.trim_matches('"').split_whitespace().next().map(str::to_string)
}

/// The compiler to build with: the kernel's own when this host has it, else the host's `gcc` when its major
/// version is at least the kernel's (never older: an older gcc rejects a newer kernel's flags). The error says why.
fn choose_compiler(named: &str, named_present: bool, host_major: Option<u32>) -> Result<String, String> {
    if named_present {
        return Ok(named.to_string());
    }
    let host = host_major.map_or_else(|| "no gcc".to_string(), |m| format!("gcc {m}"));
    match (gcc_major(named), host_major) {
        (Some(want), Some(have)) if have >= want => Ok("gcc".to_string()),
        _ => Err(format!(
            "the headers build modules with {named}, which this host lacks (it has {host}; an older gcc rejects a \
             newer kernel's flags)"
        )),
    }
}

/// The major version in a compiler's name: `gcc-10`, `x86_64-linux-gnu-gcc-14`.
fn gcc_major(name: &str) -> Option<u32> {
    name.rsplit_once("gcc-")?.1.parse().ok()
}

/// The host `gcc`'s major version (`gcc -dumpversion` prints `12`).
fn host_gcc_major() -> Option<u32> {
    let out = exec::output(Command::new("gcc").arg("-dumpversion"), LIMIT).ok()?;
    String::from_utf8_lossy(&out.stdout).trim().split('.').next()?.parse().ok()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parts_of_a_depends_line() {
        let d = "linux-headers-6.1.0-57-common (= 6.1.192-3), linux-kbuild-6.1 (>= 6.1.192-3), \
                 linux-compiler-gcc-12-x86";
        assert_eq!(header_parts(d), ["linux-headers-6.1.0-57-common", "linux-kbuild-6.1"]);
        let d = "linux-base (>= 4.12~), linux-headers-6.12.118+deb13-common (= 6.12.118-1), \
                 linux-image-6.12.118+deb13-amd64 (= 6.12.118-1) | linux-image-6.12.118+deb13-amd64-unsigned, \
                 linux-kbuild-6.12.118+deb13, gcc-14";
        assert_eq!(header_parts(d), ["linux-headers-6.12.118+deb13-common", "linux-kbuild-6.12.118+deb13"]);
    }

    #[test]
    fn a_newer_host_gcc_stands_in_for_an_older_one() {
        assert_eq!(choose_compiler("gcc-12", true, Some(12)), Ok("gcc-12".to_string()));
        assert_eq!(choose_compiler("gcc-10", false, Some(12)), Ok("gcc".to_string()));
        assert_eq!(choose_compiler("x86_64-linux-gnu-gcc-12", false, Some(12)), Ok("gcc".to_string()));
        let newer = choose_compiler("x86_64-linux-gnu-gcc-14", false, Some(12)).unwrap_err();
        assert!(newer.contains("x86_64-linux-gnu-gcc-14") && newer.contains("gcc 12"), "{newer}");
        assert!(choose_compiler("gcc-10", false, None).unwrap_err().contains("no gcc"));
        assert!(choose_compiler("cc", false, Some(12)).is_err(), "a name without a version is not guessed");
    }

    #[test]
    fn compiler_of_a_config() {
        let c = "CONFIG_CC_IS_GCC=y\nCONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0\"\n";
        assert_eq!(cc_of_config(c).as_deref(), Some("x86_64-linux-gnu-gcc-14"));
        assert_eq!(cc_of_config("CONFIG_X=y\n"), None);
    }
}
