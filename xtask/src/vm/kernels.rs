//! The kernel cache, `target/vm/kernels/<release>/`: `vmlinuz`, the KVM modules the guest loads
//! (decompressed `.ko`, in load order) and `kernel.json` (what was fetched, from where).
//!
//! Fetching downloads the `linux-image-…` package (and, for split kernels, its
//! `linux-{base,binary,modules}-<release>` parts) through the private apt configuration,
//! extracts it (`dpkg-deb -x`), lets `depmod -b` and `modprobe -d … -D <module>` work out the
//! modules of [`TOP_MODULES`] and their dependencies (irqbypass, kvm, ccp; zsmalloc on 6.1,
//! lz4_compress and lz4hc_compress on 6.12), and keeps only those. The cache entry is built under
//! a temporary name and renamed at the end, so an interrupted fetch leaves nothing that looks
//! cached; a cached release is fetched again only when its entry lacks one of [`TOP_MODULES`]
//! (an entry made before that module was added to the list).
//!
//! For booted systems (`rootfs`: a Debian root filesystem with systemd, for the `fleet` tier) the entry also keeps
//! `rootfs/lib/modules/<release>/`: the closures of [`ROOTFS_MODULES`] (disk, network, file system and KVM
//! drivers), decompressed, with `modules.dep` from `depmod`, so that the guest's own `modprobe` and udev load them.
//! An entry without that tree is fetched again once.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{
    apt::PrivateApt,
    exec,
    resolve::{self, Request, Resolved, Series},
    say,
};
use crate::workspace::Workspace;

/// The modules whose dependency closures the guest loads, in this order: `kvm_amd` gives the
/// guest `/dev/kvm`; `zram` a swap device for the `swap-out` scenario (Debian builds both as
/// modules).
pub const TOP_MODULES: &[&str] = &["kvm_amd", "zram"];
/// Modules the guest also loads where the kernel has them, after [`TOP_MODULES`]: soft-RoCE (`rdma_rxe`, with
/// `ib_core` and friends), its user-space interface (`ib_uverbs`: `/dev/infiniband/uverbs*` for libibverbs) and
/// `dummy` (the netdev the `rdma-odp` scenario puts an rxe link on), and `crc32_generic`: before 6.15 or so rxe
/// takes its ICRC from the crypto API (`crypto_alloc_shash("crc32")` when a link is added), which a guest without
/// `modprobe` cannot load on demand (the link add then fails with ENOENT: "failed to allocate crc algorithm"). A
/// kernel without one of them keeps the rest; the scenario then fails by itself, saying what it lacks.
pub const OPTIONAL_MODULES: &[&str] = &["crc32_generic", "rdma_rxe", "ib_uverbs", "dummy"];
/// The modules a booted Debian system under QEMU needs from its kernel (with their dependency closures):
/// `virtio_pci`, `virtio_blk` and `ext4` to mount its root disk, `virtio_net` for user-mode networking, and
/// what [`TOP_MODULES`] names. Debian builds all of them as modules (6.12 has `virtio_pci` built in).
pub const ROOTFS_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_net", "ext4", "kvm_amd", "zram"];
/// The module tree for root filesystems, below the cache entry.
const ROOTFS_TREE: &str = "rootfs";
const META_FILE: &str = "kernel.json";
const TOOL_LIMIT: Duration = Duration::from_secs(600);

/// What a cache entry holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelMeta {
    pub release: String,
    /// `major.minor`.
    pub series: String,
    pub package: String,
    pub version: String,
    pub suite: String,
    pub archive: String,
    /// Module file names under `modules/`, in load order.
    pub modules: Vec<String>,
    /// The [`TOP_MODULES`] whose closures `modules` holds (absent in entries from before the list
    /// grew: those hold only `kvm_amd`'s).
    #[serde(default = "kvm_only")]
    pub top_modules: Vec<String>,
    /// The [`OPTIONAL_MODULES`] looked for when the entry was made (absent in older entries), whether found or not.
    #[serde(default)]
    pub optional_modules: Vec<String>,
    /// The [`ROOTFS_MODULES`] whose closures `rootfs/lib/modules/<release>/` holds (absent in older entries).
    #[serde(default)]
    pub rootfs_modules: Vec<String>,
    /// Unix seconds.
    pub fetched_at: u64,
}

/// A cached kernel.
#[derive(Clone, Debug)]
pub struct CachedKernel {
    pub dir: PathBuf,
    pub meta: KernelMeta,
}

impl CachedKernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    pub fn module(&self, name: &str) -> PathBuf {
        self.dir.join("modules").join(name)
    }

    pub fn series(&self) -> Option<Series> {
        self.meta.series.parse().ok()
    }

    /// Whether the entry holds the closure of every module in [`TOP_MODULES`] and [`ROOTFS_MODULES`].
    pub fn complete(&self) -> bool {
        TOP_MODULES.iter().all(|m| self.meta.top_modules.iter().any(|t| t == m))
            && OPTIONAL_MODULES.iter().all(|m| self.meta.optional_modules.iter().any(|t| t == m))
            && ROOTFS_MODULES.iter().all(|m| self.meta.rootfs_modules.iter().any(|t| t == m))
    }

    /// The root of the module tree for root filesystems: it holds `lib/modules/<release>/`.
    pub fn rootfs_modules(&self) -> PathBuf {
        self.dir.join(ROOTFS_TREE)
    }
}

fn kvm_only() -> Vec<String> {
    vec!["kvm_amd".to_string()]
}

pub fn cache_root(ws: &Workspace) -> PathBuf {
    ws.target_dir().join("vm/kernels")
}

/// Every complete cache entry.
pub fn cached(ws: &Workspace) -> Vec<CachedKernel> {
    let Ok(entries) = fs::read_dir(cache_root(ws)) else { return Vec::new() };
    let mut out: Vec<_> = entries.filter_map(|e| load(&e.ok()?.path())).collect();
    out.sort_by(|a, b| a.meta.release.cmp(&b.meta.release));
    out
}

fn load(dir: &Path) -> Option<CachedKernel> {
    let text = fs::read_to_string(dir.join(META_FILE)).ok()?;
    let meta = serde_json::from_str(&text).ok()?;
    Some(CachedKernel { dir: dir.to_path_buf(), meta })
}

/// The newest cached kernel that satisfies `request`, without asking apt.
pub fn find_cached(ws: &Workspace, request: &Request) -> Result<Option<CachedKernel>> {
    let fits = |k: &CachedKernel| match request {
        Request::Series(s) => k.series() == Some(*s),
        Request::Sid => k.meta.suite == "sid",
        Request::Package(p) => &k.meta.package == p,
    };
    let mut best: Option<CachedKernel> = None;
    for k in cached(ws).into_iter().filter(fits) {
        let newer = match &best {
            Some(b) => resolve::compare_versions(&k.meta.version, &b.meta.version)?.is_gt(),
            None => true,
        };
        if newer {
            best = Some(k);
        }
    }
    Ok(best)
}

/// Resolves `request` through apt (updating stale lists, or always with `refresh`) and makes
/// sure the package is cached. When apt cannot be asked but a fitting kernel is cached, that one
/// is used with a note.
pub fn fetch(ws: &Workspace, request: &Request, refresh: bool) -> Result<CachedKernel> {
    let resolved = PrivateApt::prepare(ws).and_then(|apt| {
        apt.update_if_stale(refresh)?;
        Ok((resolve::resolve(&apt, request)?, apt))
    });
    let (resolved, apt) = match resolved {
        Ok(r) => r,
        Err(err) => match find_cached(ws, request)? {
            Some(k) => {
                say(format!("apt could not resolve {request} ({err:#}); using cached {}", k.meta.release));
                return Ok(k);
            }
            None => return Err(err.context(format!("resolving kernel {request}"))),
        },
    };
    say(format!(
        "{request} is {} {} ({} from {})",
        resolved.package, resolved.version, resolved.suite, resolved.archive
    ));
    let dir = cache_root(ws).join(&resolved.release);
    match load(&dir).filter(|k| k.meta.version == resolved.version) {
        Some(k) if k.complete() => {
            say(format!("{} already cached in {}", resolved.release, ws.display(&dir)));
            return Ok(k);
        }
        Some(k) => say(format!(
            "{} is cached with the modules of {} only; fetching it again for {}",
            resolved.release,
            k.meta.top_modules.iter().chain(&k.meta.rootfs_modules).cloned().collect::<Vec<_>>().join(", "),
            TOP_MODULES.iter().chain(OPTIONAL_MODULES).chain(ROOTFS_MODULES).copied().collect::<Vec<_>>().join(", ")
        )),
        None => {}
    }
    build_entry(ws, &apt, &resolved, &dir)
}

/// Downloads, extracts and keeps what the guest needs, then renames the entry into place.
fn build_entry(ws: &Workspace, apt: &PrivateApt, r: &Resolved, dir: &Path) -> Result<CachedKernel> {
    let work = ws.target_dir().join("vm/tmp").join(&r.release);
    remove_dir(&work)?;
    let root = work.join("root");
    for package in packages_of(apt, r)? {
        let size = apt
            .show(&package, &r.version)
            .ok()
            .and_then(|f| f.into_iter().find(|(k, _)| k == "Size"))
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .map_or(String::new(), |b| format!(", {:.1} MB", b as f64 / 1e6));
        say(format!("downloading {package} {}{size}", r.version));
        let deb = apt.download(&package, &r.version, &work)?;
        say(format!("extracting {}", deb.display()));
        exec::output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root), TOOL_LIMIT)?;
        fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))?;
    }

    let partial = dir.with_file_name(format!(".{}.partial", r.release));
    remove_dir(&partial)?;
    fs::create_dir_all(partial.join("modules"))?;
    let vmlinuz = find_file(&root, &r.release, "vmlinuz")
        .with_context(|| format!("{} {} (and the packages it depends on) has no vmlinuz", r.package, r.version))?;
    fs::copy(&vmlinuz, partial.join("vmlinuz")).with_context(|| format!("copying {}", vmlinuz.display()))?;
    if let Some(config) = find_file(&root, &r.release, "config") {
        fs::copy(&config, partial.join("config"))?;
    }
    let mut modules = module_closures(&root, &r.release, TOP_MODULES)?;
    for optional in OPTIONAL_MODULES {
        match module_closures(&root, &r.release, &[optional]) {
            Ok(closure) => modules.extend(closure.into_iter().filter(|m| !modules.contains(m)).collect::<Vec<_>>()),
            Err(err) => say(format!("{}: no {optional} ({err:#}); the guest goes without it", r.release)),
        }
    }
    let mut names = Vec::new();
    for module in &modules {
        let name = decompress_module(module, &partial.join("modules"))?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    say(format!("{}: modules {}", r.release, names.join(" ")));
    let tree = rootfs_tree(&root, &r.release, &partial.join(ROOTFS_TREE))?;
    say(format!("{}: {} modules for root filesystems ({})", r.release, tree, ROOTFS_MODULES.join(", ")));

    let meta = KernelMeta {
        release: r.release.clone(),
        series: r.series.to_string(),
        package: r.package.clone(),
        version: r.version.clone(),
        suite: r.suite.clone(),
        archive: r.archive.clone(),
        modules: names,
        top_modules: TOP_MODULES.iter().map(|m| m.to_string()).collect(),
        optional_modules: OPTIONAL_MODULES.iter().map(|m| m.to_string()).collect(),
        rootfs_modules: ROOTFS_MODULES.iter().map(|m| m.to_string()).collect(),
        fetched_at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    };
    fs::write(partial.join(META_FILE), serde_json::to_string_pretty(&meta)? + "\n")?;
    remove_dir(dir)?;
    fs::rename(&partial, dir).with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
    remove_dir(&work)?;
    say(format!("cached {} in {}", r.release, ws.display(dir)));
    Ok(CachedKernel { dir: dir.to_path_buf(), meta })
}

/// The image package plus the parts it depends on for the same release: newer kernels
/// (sid, 7.x) split the image into `linux-binary-<release>` (vmlinuz), `linux-modules-<release>`
/// and `linux-base-<release>` (modules.order, modules.builtin).
fn packages_of(apt: &PrivateApt, r: &Resolved) -> Result<Vec<String>> {
    let fields = apt.show(&r.package, &r.version)?;
    let depends = fields.iter().find(|(k, _)| k == "Depends").map_or("", |(_, v)| v.as_str());
    let mut out = vec![r.package.clone()];
    out.extend(release_parts(depends, &r.release));
    Ok(out)
}

/// `linux-*-<release>` names among `depends` (alternatives included), in order, without repeats.
fn release_parts(depends: &str, release: &str) -> Vec<String> {
    let suffix = format!("-{release}");
    let mut out: Vec<String> = Vec::new();
    for name in depends.split([',', '|']).filter_map(|d| d.split_whitespace().next()) {
        if name.starts_with("linux-") && name.ends_with(&suffix) && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    out
}

/// `boot/<name>-<release>` (classic packages) or `<modules dir>/<name>` (split packages).
fn find_file(root: &Path, release: &str, name: &str) -> Option<PathBuf> {
    [
        root.join(format!("boot/{name}-{release}")),
        root.join(format!("usr/lib/modules/{release}/{name}")),
        root.join(format!("lib/modules/{release}/{name}")),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// The module files `modprobe` would load for each of `tops`, in order (a module two closures share
/// appears once, at its first place), from the extracted tree.
pub fn module_closures(root: &Path, release: &str, tops: &[&str]) -> Result<Vec<PathBuf>> {
    // kmod looks under <base>/lib/modules; newer packages ship /usr/lib/modules only.
    if !root.join("lib/modules").exists() && root.join("usr/lib/modules").exists() {
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).context("linking lib -> usr/lib")?;
    }
    if !root.join("lib/modules").join(release).is_dir() {
        bail!("the package has no lib/modules/{release}");
    }
    exec::output(Command::new("depmod").arg("-b").arg(root).arg(release), TOOL_LIMIT)?;
    let mut modules: Vec<PathBuf> = Vec::new();
    for top in tops {
        let out = exec::output(
            Command::new("modprobe").arg("-d").arg(root).args(["-S", release, "--show-depends", top]),
            TOOL_LIMIT,
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let closure = parse_show_depends(&text);
        if closure.is_empty() && text.lines().any(|l| l.trim() == format!("builtin {top}")) {
            continue; // built into this kernel (virtio_pci on 6.12)
        }
        if closure.is_empty() {
            bail!("`modprobe --show-depends {top}` for {release} listed no module to load");
        }
        for m in closure {
            if !modules.contains(&m) {
                modules.push(m);
            }
        }
    }
    Ok(modules)
}

/// Copies the closures of [`ROOTFS_MODULES`] from the extracted package tree `root` into `out` as
/// `lib/modules/<release>/<same relative path>.ko` (decompressed), with the package's `modules.order`,
/// `modules.builtin*` files, and runs `depmod` over the result; returns how many modules it holds.
fn rootfs_tree(root: &Path, release: &str, out: &Path) -> Result<usize> {
    let src = root.join("lib/modules").join(release);
    let dst = out.join("lib/modules").join(release);
    fs::create_dir_all(&dst)?;
    let modules = module_closures(root, release, ROOTFS_MODULES)?;
    for module in &modules {
        // modprobe prints paths below its -d root (through the lib -> usr/lib link on split packages).
        let rel = module
            .strip_prefix(&src)
            .or_else(|_| module.strip_prefix(root.join("usr/lib/modules").join(release)))
            .with_context(|| format!("{} is not below {}", module.display(), src.display()))?;
        let target_dir = dst.join(rel.parent().unwrap_or(Path::new("")));
        fs::create_dir_all(&target_dir)?;
        decompress_module(module, &target_dir)?;
    }
    for name in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
        let file = src.join(name);
        if file.is_file() {
            fs::copy(&file, dst.join(name)).with_context(|| format!("copying {}", file.display()))?;
        }
    }
    exec::output(Command::new("depmod").arg("-b").arg(out).arg(release), TOOL_LIMIT)?;
    Ok(modules.len())
}

/// `insmod <path> [params]` lines; `builtin <name>` lines need nothing.
fn parse_show_depends(text: &str) -> Vec<PathBuf> {
    text.lines().filter_map(|l| l.strip_prefix("insmod ")?.split_whitespace().next()).map(PathBuf::from).collect()
}

/// Copies `module` into `dir` as a plain `.ko` (busybox insmod and `init_module` want it
/// uncompressed); returns the file name.
fn decompress_module(module: &Path, dir: &Path) -> Result<String> {
    let file = module.file_name().and_then(|n| n.to_str()).context("module path without a name")?;
    let (name, tool) = match file.rsplit_once(".ko.") {
        Some((stem, "xz")) => (format!("{stem}.ko"), Some("xz")),
        Some((stem, "zst")) => (format!("{stem}.ko"), Some("zstd")),
        Some((stem, "gz")) => (format!("{stem}.ko"), Some("gzip")),
        Some((_, other)) => bail!("{}: unknown module compression .{other}", module.display()),
        None => (file.to_string(), None),
    };
    let target = dir.join(&name);
    match tool {
        None => {
            fs::copy(module, &target).with_context(|| format!("copying {}", module.display()))?;
        }
        Some(tool) => {
            let out = exec::output(Command::new(tool).arg("-dc").arg(module), TOOL_LIMIT)?;
            fs::write(&target, out.stdout).with_context(|| format!("writing {}", target.display()))?;
        }
    }
    Ok(name)
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_depends_lines() {
        let text = "insmod /x/lib/modules/6.1.0-56-amd64/kernel/virt/lib/irqbypass.ko \n\
                    builtin ccp\n\
                    insmod /x/lib/modules/6.12/kernel/arch/x86/kvm/kvm-amd.ko.xz nested=1\n";
        let got = parse_show_depends(text);
        assert_eq!(
            got,
            [
                PathBuf::from("/x/lib/modules/6.1.0-56-amd64/kernel/virt/lib/irqbypass.ko"),
                PathBuf::from("/x/lib/modules/6.12/kernel/arch/x86/kvm/kvm-amd.ko.xz")
            ]
        );
    }

    #[test]
    fn split_packages_of_a_release() {
        let depends = "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
                       linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1), \
                       linux-modules-7.2.13+deb14-amd64 (= 7.2.13-1)";
        assert_eq!(
            release_parts(depends, "7.2.13+deb14-amd64"),
            ["linux-base-7.2.13+deb14-amd64", "linux-binary-7.2.13+deb14-amd64", "linux-modules-7.2.13+deb14-amd64"]
        );
        assert!(release_parts("kmod, linux-base (>= 4.3~)", "6.1.0-56-amd64").is_empty());
    }

    #[test]
    fn modules_are_stored_uncompressed() {
        let dir = std::env::temp_dir().join(format!("mmuscope-vm-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let src = dir.join("m.ko");
        fs::write(&src, b"ELF module").unwrap();
        let out = exec::output(Command::new("xz").arg("-k").arg("-f").arg(&src), TOOL_LIMIT);
        if out.is_ok() {
            let into = dir.join("into");
            fs::create_dir_all(&into).unwrap();
            assert_eq!(decompress_module(&dir.join("m.ko.xz"), &into).unwrap(), "m.ko");
            assert_eq!(fs::read(into.join("m.ko")).unwrap(), b"ELF module");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
