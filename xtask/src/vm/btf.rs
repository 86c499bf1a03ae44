//! `cargo xtask vm btf --kernel K`: the raw BTF of a cached kernel (what its
//! `/sys/kernel/btf/vmlinux` holds), taken out of its bzImage: the compressed payload (located by
//! the boot protocol's `setup_sects`, `payload_offset` and `payload_length`, minus the 4-byte size
//! trailer the kernel build appends) is decompressed with
//! the matching tool and `objcopy` extracts the `.BTF` section of the resulting vmlinux.
//!
//! Handing one kernel's BTF to the agent in another kernel's guest (`mmuscope --btf`) is how the
//! VM tier is shown to catch a struct-layout mistake (see `tiers/vm.rs`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{exec, kernels::CachedKernel};

const TOOL_LIMIT: Duration = Duration::from_secs(300);

/// Writes the BTF of `kernel` to `out` (default `target/vm/btf/<release>.btf`); returns the path.
pub fn extract(kernel: &CachedKernel, out: &Path) -> Result<PathBuf> {
    let image = fs::read(kernel.vmlinuz()).with_context(|| format!("reading {}", kernel.vmlinuz().display()))?;
    let (payload, tool) =
        payload(&image).with_context(|| format!("{} is not a bzImage I can read", kernel.vmlinuz().display()))?;
    let dir = out.parent().context("output path without a directory")?;
    fs::create_dir_all(dir)?;
    let compressed = out.with_extension("payload");
    fs::write(&compressed, payload)?;
    let vmlinux = exec::output(Command::new(tool).arg("-dc").arg(&compressed), TOOL_LIMIT)?;
    let elf = out.with_extension("vmlinux");
    fs::write(&elf, &vmlinux.stdout)?;
    fs::remove_file(&compressed)?;
    let extracted = exec::output(
        Command::new("objcopy").args(["-O", "binary", "--only-section=.BTF"]).arg(&elf).arg(out),
        TOOL_LIMIT,
    );
    fs::remove_file(&elf)?;
    extracted?;
    if fs::metadata(out).map_or(0, |m| m.len()) == 0 {
        bail!("{} has no .BTF section", kernel.meta.release);
    }
    Ok(out.to_path_buf())
}

/// The compressed kernel inside a bzImage and the tool that decompresses it.
fn payload(image: &[u8]) -> Result<(&[u8], &'static str)> {
    let u32_at = |at: usize| -> Result<usize> {
        let bytes = image.get(at..at + 4).context("image too short")?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
    };
    if image.get(0x202..0x206) != Some(b"HdrS") {
        bail!("no `HdrS` boot header");
    }
    let setup_sects = match image.get(0x1f1).copied().context("image too short")? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    // The build appends the uncompressed size (4 bytes) to the compressed stream (`*_with_size`).
    let len = u32_at(0x24c)?.checked_sub(4).context("payload shorter than its size trailer")?;
    let payload = image.get(start..start + len).context("payload outside the image")?;
    let tool = match payload {
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd",
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
        [0x1f, 0x8b, ..] => "gzip",
        [a, b, c, d, ..] => bail!("unknown kernel compression (magic {a:02x} {b:02x} {c:02x} {d:02x})"),
        _ => bail!("empty payload"),
    };
    Ok((payload, tool))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_payload_through_the_boot_header() {
        let mut image = vec![0u8; 4096];
        image[0x1f1] = 1; // (1 + 1) * 512 = 1024: start of the protected-mode part
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x248..0x24c].copy_from_slice(&100u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&10u32.to_le_bytes());
        image[1124..1130].copy_from_slice(&[0xfd, b'7', b'z', b'X', b'Z', 0]);
        let (payload, tool) = payload(&image).unwrap();
        assert_eq!((payload.len(), tool), (6, "xz"));
        image[0x202] = b'X';
        assert!(super::payload(&image).is_err());
    }
}
