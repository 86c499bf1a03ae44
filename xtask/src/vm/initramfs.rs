//! The initramfs of one guest run: busybox-static, `/init`, the kernel's KVM modules, the files
//! given with `--file HOST:GUEST` (ELF files with their debug info stripped, which shrinks a
//! debug build of the agent from ~85 to ~18 MB) and the shared libraries `ldd` lists for each of
//! them, at the same paths as on the host. Packed with `cpio -H newc` and `gzip -1`.

use std::{
    fs,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Component, Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{
    exec,
    guest_init::{self, COMMAND_SCRIPT, MODULES_DIR, Marker},
    kernels::CachedKernel,
};

/// busybox-static's binary.
const BUSYBOX: &str = "/bin/busybox";
const TOOL_LIMIT: Duration = Duration::from_secs(300);
/// Directories every guest has.
const SKELETON: &[&str] =
    &["bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "proc", "sys", "dev", "tmp", "run", "root", "etc", "vm"];

/// A file for the guest: `HOST:GUEST`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestFile {
    pub host: PathBuf,
    pub guest: PathBuf,
}

impl std::str::FromStr for GuestFile {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (host, guest) = s.split_once(':').context("expected HOST:GUEST")?;
        let guest = PathBuf::from(guest);
        if !guest.is_absolute() || guest.components().any(|c| matches!(c, Component::ParentDir)) {
            bail!("the guest path {} must be absolute and without `..`", guest.display());
        }
        Ok(GuestFile { host: PathBuf::from(host), guest })
    }
}

/// Builds `<dir>/initrd.cpio.gz` for `kernel`, with `files` and `command`; returns its path.
pub fn build(
    kernel: &CachedKernel,
    files: &[GuestFile],
    command: &[String],
    marker: &Marker,
    dir: &Path,
) -> Result<PathBuf> {
    let root = dir.join("root");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    for d in SKELETON {
        fs::create_dir_all(root.join(d))?;
    }
    let mut staged = Stage { root: root.clone(), libs: Vec::new() };

    staged.add_binary(Path::new(BUSYBOX), Path::new(BUSYBOX)).context("busybox-static (`/bin/busybox`)")?;
    staged.write(Path::new("/init"), &guest_init::init_script(marker), 0o755)?;
    staged.write(Path::new(COMMAND_SCRIPT), &guest_init::command_script(command), 0o755)?;
    staged.write(Path::new("/etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n", 0o644)?;
    staged.write(Path::new("/etc/group"), "root:x:0:\n", 0o644)?;
    staged.write(Path::new("/etc/hosts"), "127.0.0.1 localhost\n", 0o644)?;

    let modules = Path::new(MODULES_DIR);
    for name in &kernel.meta.modules {
        staged.copy(&kernel.module(name), &modules.join(name))?;
    }
    staged.write(&modules.join("order"), &(kernel.meta.modules.join("\n") + "\n"), 0o644)?;

    for file in files {
        staged
            .add_binary(&file.host, &file.guest)
            .with_context(|| format!("adding {} as {}", file.host.display(), file.guest.display()))?;
    }

    let cpio = dir.join("initrd.cpio");
    pack(&root, &cpio)?;
    let gz = dir.join("initrd.cpio.gz");
    let _ = fs::remove_file(&gz);
    exec::output(Command::new("gzip").args(["-1", "-n", "-f"]).arg(&cpio), TOOL_LIMIT)?;
    fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    Ok(gz)
}

/// The staging tree.
struct Stage {
    root: PathBuf,
    /// Libraries already added (host paths).
    libs: Vec<PathBuf>,
}

impl Stage {
    fn at(&self, guest: &Path) -> PathBuf {
        self.root.join(guest.strip_prefix("/").unwrap_or(guest))
    }

    fn write(&self, guest: &Path, text: &str, mode: u32) -> Result<()> {
        let path = self.at(guest);
        fs::create_dir_all(path.parent().expect("guest paths are absolute"))?;
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// Copies a file as is (following symlinks), keeping its permissions.
    fn copy(&self, host: &Path, guest: &Path) -> Result<()> {
        let path = self.at(guest);
        fs::create_dir_all(path.parent().expect("guest paths are absolute"))?;
        fs::copy(host, &path).with_context(|| format!("copying {} into the initramfs", host.display()))?;
        Ok(())
    }

    /// Copies `host` (an ELF file loses its debug info) and the libraries it needs.
    fn add_binary(&mut self, host: &Path, guest: &Path) -> Result<()> {
        if !host.is_file() {
            bail!("{} is not a file", host.display());
        }
        if !is_elf(host) {
            return self.copy(host, guest);
        }
        let target = self.at(guest);
        fs::create_dir_all(target.parent().expect("guest paths are absolute"))?;
        let stripped =
            exec::output(Command::new("objcopy").arg("--strip-debug").arg(host).arg(&target), TOOL_LIMIT).is_ok();
        if !stripped {
            self.copy(host, guest)?;
        }
        for lib in shared_libraries(host)? {
            if !self.libs.contains(&lib) {
                self.copy(&lib, &lib)?;
                self.libs.push(lib);
            }
        }
        Ok(())
    }
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"\x7fELF"
}

/// What `ldd` says `binary` loads (none for a static binary).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = exec::output_any_status(Command::new("ldd").arg(binary), TOOL_LIMIT)?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    parse_ldd(&text).with_context(|| format!("`ldd {}`", binary.display()))
}

/// Library paths from `ldd` output; a `not found` library is an error.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("=> not found") {
            bail!("library missing on this host: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next().filter(|w| w.starts_with('/')),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// `cpio -o -H newc` of everything under `root` (owned by root in the archive) into `out`.
pub fn pack(root: &Path, out: &Path) -> Result<()> {
    let mut names = Vec::new();
    walk(root, root, &mut names)?;
    names.sort();
    let list = dir_list(&names);
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cmd = Command::new("cpio");
    cmd.args(["-o", "-H", "newc", "-R", "0:0", "--quiet"]).current_dir(root);
    let line = crate::process::describe(&cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(list.as_bytes()).with_context(|| format!("feeding `{line}`"))?;
    }
    let status = exec::wait_within(&mut child, TOOL_LIMIT, &line)?;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        bail!("`{line}` failed ({status}): {}", err.trim());
    }
    Ok(())
}

fn dir_list(names: &[String]) -> String {
    names.iter().fold(String::new(), |mut out, n| {
        out.push_str(n);
        out.push('\n');
        out
    })
}

/// Relative paths of every entry under `dir` (directories before their contents once sorted).
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let rel = path.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
        out.push(rel);
        if path.is_dir() && !path.is_symlink() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_file_argument() {
        let f: GuestFile = "target/debug/mmuscope:/usr/bin/mmuscope".parse().unwrap();
        assert_eq!(f.host, PathBuf::from("target/debug/mmuscope"));
        assert_eq!(f.guest, PathBuf::from("/usr/bin/mmuscope"));
        assert!("a:relative".parse::<GuestFile>().is_err());
        assert!("a:/x/../etc".parse::<GuestFile>().is_err());
        assert!("nocolon".parse::<GuestFile>().is_err());
    }

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007fdbf7c53000)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007fdbf7c1f000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fdbf6d3e000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007fdbf7c55000)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            ["/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]
                .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
    }
}
