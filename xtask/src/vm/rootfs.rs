//! Root filesystems of booted Debian systems for QEMU (the `fleet` tier): a Debian release made with `mmdebstrap`
//! from the archive this machine's apt uses, with systemd as init, the kernel's modules (the `rootfs` tree of the
//! kernel cache, [`super::kernels::ROOTFS_MODULES`]) and the test harness's command channel
//! (`scripts/fleet-driver`), packed into an ext4 disk image with `mkfs.ext4 -d` (nothing is mounted), plus a small
//! initramfs (`scripts/boot-init`, busybox) that loads the disk, network and file system modules, mounts the disk
//! and starts systemd as PID 1.
//!
//! Cached in `target/vm/rootfs/<release>-<key>/` (`root.ext4`, `initrd.cpio.gz`, `image.json`), where the key is a
//! hash of every input: the recipe below, the suite, the archive, the package list, the kernel package and the
//! scripts put into the image. A changed input builds a new image and removes the older ones of that release; guests
//! boot the disk with `snapshot=on`, so the cached image never changes.

use std::{
    fs,
    io::Write,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{exec, initramfs, kernels::CachedKernel, say};
use crate::workspace::Workspace;

/// Bump when the way an image is made changes in a way the hashed inputs below do not show.
const RECIPE: &str = "fleet-rootfs 2";
/// What a fleet host runs besides the base system: systemd as init (with udev and D-Bus, as every Debian server
/// has them), kmod for module loading, and the tools the checks use (curl, jq, bpftool, iproute2, procps).
pub const PACKAGES: &[&str] =
    &["systemd", "systemd-sysv", "udev", "dbus", "kmod", "iproute2", "procps", "curl", "jq", "bpftool"];
/// Documentation and translations are left out of the base system (the image stays ~200 MB). The image's own dpkg
/// configuration keeps no such exclusion, so the package under test installs everything it ships.
const DPKG_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
];
/// Modules the initramfs loads to mount the root disk and bring up the network.
const BOOT_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_net", "ext4"];
const DISK_SIZE: &str = "2G";
const DRIVER: &str = include_str!("scripts/fleet-driver");
const DRIVER_UNIT: &str = include_str!("scripts/fleet-driver.service");
const BOOT_INIT: &str = include_str!("scripts/boot-init");
const BUSYBOX: &str = "/bin/busybox";
const BUILD_LIMIT: Duration = Duration::from_secs(1200);
const TOOL_LIMIT: Duration = Duration::from_secs(300);
/// Units of the base system that only cost boot time in a test guest (periodic maintenance).
const DROPPED_WANTS: &[&str] = &[
    "timers.target.wants/apt-daily.timer",
    "timers.target.wants/apt-daily-upgrade.timer",
    "timers.target.wants/dpkg-db-backup.timer",
    "timers.target.wants/e2scrub_all.timer",
    "timers.target.wants/fstrim.timer",
    "multi-user.target.wants/e2scrub_reap.service",
];

/// What an image was made from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageMeta {
    pub suite: String,
    pub archive: String,
    pub packages: Vec<String>,
    pub kernel_release: String,
    pub kernel_version: String,
    pub key: String,
    /// Unix seconds.
    pub built_at: u64,
    pub build_seconds: f64,
}

/// A cached image.
pub struct Image {
    pub dir: PathBuf,
    pub meta: ImageMeta,
}

impl Image {
    pub fn disk(&self) -> PathBuf {
        self.dir.join("root.ext4")
    }

    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.cpio.gz")
    }
}

/// The image of Debian `suite` for `kernel`: cached, or built (~1 min: mmdebstrap is most of it).
pub fn ensure(ws: &Workspace, suite: &str, kernel: &CachedKernel) -> Result<Image> {
    if !kernel.rootfs_modules().join("lib/modules").join(&kernel.meta.release).is_dir() {
        bail!("the kernel cache entry of {} has no module tree for root filesystems", kernel.meta.release);
    }
    let archive = super::debian_mirror()?;
    let key = key(suite, &archive, kernel)?;
    let root = ws.target_dir().join("vm/rootfs");
    let name = format!("{suite}-{}", kernel.meta.release);
    let dir = root.join(format!("{name}-{key}"));
    if let Some(meta) =
        read_meta(&dir).filter(|_| dir.join("root.ext4").is_file() && dir.join("initrd.cpio.gz").is_file())
    {
        say(format!("root filesystem {name} cached ({}, built {:.0} s)", ws.display(&dir), meta.build_seconds));
        return Ok(Image { dir, meta });
    }
    say(format!(
        "building the root filesystem {name}: mmdebstrap {suite} from {archive} with {} (~1 min)",
        PACKAGES.join(" ")
    ));
    let started = Instant::now();
    let partial = root.join(format!(".{name}-{key}.partial"));
    remove_dir(&partial)?;
    fs::create_dir_all(&partial)?;
    let tree = partial.join("root");
    debootstrap(suite, &archive, &tree)?;
    customize(&tree, kernel)?;
    exec::run_shown(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-d"])
            .arg(&tree)
            .arg(partial.join("root.ext4"))
            .arg(DISK_SIZE),
        TOOL_LIMIT,
    )
    .context("mkfs.ext4 -d (e2fsprogs)")?;
    remove_dir(&tree)?;
    boot_initramfs(kernel, &partial)?;
    let meta = ImageMeta {
        suite: suite.to_string(),
        archive,
        packages: PACKAGES.iter().map(|p| p.to_string()).collect(),
        kernel_release: kernel.meta.release.clone(),
        kernel_version: kernel.meta.version.clone(),
        key,
        built_at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        build_seconds: started.elapsed().as_secs_f64(),
    };
    fs::write(partial.join("image.json"), serde_json::to_string_pretty(&meta)? + "\n")?;
    // Older images of this release (other inputs) are never used again.
    for old in fs::read_dir(&root)?.flatten() {
        let n = old.file_name().to_string_lossy().into_owned();
        if n.starts_with(&format!("{name}-")) {
            remove_dir(&old.path())?;
        }
    }
    fs::rename(&partial, &dir).with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
    say(format!("root filesystem {name} built in {:.0} s: {}", meta.build_seconds, ws.display(&dir)));
    Ok(Image { dir, meta })
}

fn read_meta(dir: &Path) -> Option<ImageMeta> {
    serde_json::from_str(&fs::read_to_string(dir.join("image.json")).ok()?).ok()
}

/// A hash of every input of the image (12 hex digits of SHA-256, by coreutils' sha256sum).
fn key(suite: &str, archive: &str, kernel: &CachedKernel) -> Result<String> {
    let busybox = exec::output(Command::new(BUSYBOX).arg("--help"), TOOL_LIMIT)
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
        .unwrap_or_default();
    let text = format!(
        "{RECIPE}\nsuite {suite}\narchive {archive}\npackages {}\nexcludes {}\nkernel {} {} {}\nboot {}\ndisk {DISK_SIZE}\n\
         busybox {busybox}\n--- driver\n{DRIVER}\n--- unit\n{DRIVER_UNIT}\n--- init\n{BOOT_INIT}\n--- dropped\n{}\n",
        PACKAGES.join(" "),
        DPKG_EXCLUDES.join(" "),
        kernel.meta.package,
        kernel.meta.version,
        kernel.meta.rootfs_modules.join(" "),
        BOOT_MODULES.join(" "),
        DROPPED_WANTS.join(" "),
    );
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("sha256sum (coreutils)")?;
    child.stdin.take().context("sha256sum stdin")?.write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let hex = String::from_utf8_lossy(&out.stdout);
    Ok(hex.chars().take(12).collect())
}

/// `mmdebstrap --variant=minbase` into the directory `tree` (as root; dpkg without fsync for speed).
fn debootstrap(suite: &str, archive: &str, tree: &Path) -> Result<()> {
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", "--quiet"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg("--dpkgopt=force-unsafe-io");
    for exclude in DPKG_EXCLUDES {
        cmd.arg(format!("--dpkgopt={exclude}"));
    }
    cmd.arg(suite).arg(tree).arg(archive);
    exec::run_shown(&mut cmd, BUILD_LIMIT).context("mmdebstrap (Debian package mmdebstrap)")
}

/// Makes the base system a bootable test host: the kernel's modules, the command channel, no periodic
/// maintenance units, multi-user as the default target, a host name, an fstab and a machine id.
fn customize(tree: &Path, kernel: &CachedKernel) -> Result<()> {
    let at = |p: &str| tree.join(p.trim_start_matches('/'));
    // mmdebstrap's --dpkgopt lines stay in the image unless removed; the package under test must install whole.
    let _ = fs::remove_file(at("/etc/dpkg/dpkg.cfg.d/99mmdebstrap"));
    let modules = at("/usr/lib/modules");
    fs::create_dir_all(&modules)?;
    exec::output(
        Command::new("cp")
            .arg("-a")
            .arg(kernel.rootfs_modules().join("lib/modules").join(&kernel.meta.release))
            .arg(&modules),
        TOOL_LIMIT,
    )?;
    write(&at("/usr/local/sbin/fleet-driver"), DRIVER, 0o755)?;
    write(&at("/etc/systemd/system/fleet-driver.service"), DRIVER_UNIT, 0o644)?;
    let wants = at("/etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants)?;
    relink("/etc/systemd/system/fleet-driver.service", &wants.join("fleet-driver.service"))?;
    for unit in DROPPED_WANTS {
        let _ = fs::remove_file(at("/etc/systemd/system").join(unit));
    }
    relink("/usr/lib/systemd/system/multi-user.target", &at("/etc/systemd/system/default.target"))?;
    write(&at("/etc/hostname"), "fleet\n", 0o644)?;
    write(
        &at("/etc/hosts"),
        "127.0.0.1 localhost\n127.0.1.1 fleet\n::1 localhost ip6-localhost ip6-loopback\n",
        0o644,
    )?;
    write(&at("/etc/fstab"), "/dev/vda / ext4 rw,errors=remount-ro 0 0\n", 0o644)?;
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")?;
    write(&at("/etc/machine-id"), &format!("{}\n", uuid.trim().replace('-', "")), 0o444)?;
    // As after a first boot: the ConditionNeedsUpdate= units (ldconfig, hwdb, journal catalog, update-done) have
    // nothing to do in an image made just now, and would cost every boot seconds under TCG.
    let usr = fs::metadata(at("/usr"))?;
    let nsec = u128::from(std::os::unix::fs::MetadataExt::mtime(&usr) as u64) * 1_000_000_000
        + u128::from(std::os::unix::fs::MetadataExt::mtime_nsec(&usr) as u64);
    for dir in ["/etc", "/var"] {
        let text = format!(
            "# This file was created by mmuscope's image builder in place of systemd-update-done.\n\
             TIMESTAMP_NSEC={nsec}\n"
        );
        write(&at(dir).join(".updated"), &text, 0o644)?;
    }
    Ok(())
}

/// The initramfs: busybox, `/init` and the closures of [`BOOT_MODULES`] in load order.
fn boot_initramfs(kernel: &CachedKernel, dir: &Path) -> Result<()> {
    let stage = dir.join("initrd");
    remove_dir(&stage)?;
    fs::create_dir_all(stage.join("bin"))?;
    fs::create_dir_all(stage.join("modules"))?;
    fs::copy(BUSYBOX, stage.join("bin/busybox")).context("busybox-static (`/bin/busybox`)")?;
    write(&stage.join("init"), BOOT_INIT, 0o755)?;
    let tree = kernel.rootfs_modules();
    let modules = super::kernels::module_closures(&tree, &kernel.meta.release, BOOT_MODULES)?;
    let mut order = String::new();
    for module in modules {
        let name = module.file_name().context("module without a name")?.to_string_lossy().into_owned();
        fs::copy(&module, stage.join("modules").join(&name))?;
        order.push_str(&name);
        order.push('\n');
    }
    write(&stage.join("modules/order"), &order, 0o644)?;
    let cpio = dir.join("initrd.cpio");
    initramfs::pack(&stage, &cpio)?;
    exec::output(Command::new("gzip").args(["-1", "-n", "-f"]).arg(&cpio), TOOL_LIMIT)?;
    remove_dir(&stage)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A symlink at `link` pointing to `target` (replacing what is there).
fn relink(target: &str, link: &Path) -> Result<()> {
    let _ = fs::remove_file(link);
    symlink(target, link).with_context(|| format!("linking {} -> {target}", link.display()))
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}
