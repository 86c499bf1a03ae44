//! Booting a guest: `qemu-system-x86_64 -accel tcg -cpu max` (TCG with `-cpu max` gives the guest
//! SVM + NPT, hence nested KVM through kvm-amd; `-accel kvm` cannot run stock kernels on these
//! hosts), kernel console on `ttyS0` → `console.log`, the command's output on `ttyS1` →
//! `output.log`, QEMU's own messages → `qemu.log`. The guest's output is echoed live after a
//! prefix (`guest| …`, or naming the kernel and mode when several guests run at once) (except the `MMUSCOPE-…` marker and result lines meant for the harness); QEMU
//! is killed when the hard time limit passes.

use std::{
    fs,
    io::{Read, Seek, SeekFrom},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    guest_init::{Marker, READY_LINE, Report},
    kernels::CachedKernel,
};
use crate::process;

pub const QEMU: &str = "qemu-system-x86_64";
/// How long the kernel may take to reach `/init` and set the guest up (normally 3–6 s; generous
/// for a loaded host). A guest that is not ready by then has hung in boot.
const BOOT_READY_LIMIT: Duration = Duration::from_secs(150);
/// Console lines quoted in errors.
const TAIL_LINES: usize = 40;
const POLL: Duration = Duration::from_millis(200);

/// How to boot.
pub struct Boot<'a> {
    pub kernel: &'a CachedKernel,
    pub initrd: &'a Path,
    /// Where the logs go.
    pub dir: &'a Path,
    pub marker: &'a Marker,
    pub memory_mib: u32,
    pub cpus: u32,
    pub timeout: Duration,
    /// Echo the guest's output live, each line after this prefix (`guest|`).
    pub echo: Option<&'a str>,
}

/// A guest whose command ran to the end.
pub struct Finished {
    /// The command's exit status.
    pub status: i32,
    /// What it printed (stdout and stderr), marker lines removed.
    pub output: String,
    pub elapsed: Duration,
    pub console_log: PathBuf,
}

/// Boots, waits for the exit marker, QEMU's exit or the time limit, and classifies the result:
/// the command's status, or an error (boot failed, kernel panic, init failed, timeout) that
/// quotes the console tail.
pub fn boot(b: &Boot) -> Result<Finished> {
    let console_log = b.dir.join("console.log");
    let output_log = b.dir.join("output.log");
    let qemu_log = b.dir.join("qemu.log");
    for f in [&console_log, &output_log] {
        fs::write(f, "").with_context(|| format!("creating {}", f.display()))?;
    }
    let mut cmd = command(b, &console_log, &output_log);
    let line = process::describe(&cmd);
    println!("$ {line}");
    let log = fs::File::create(&qemu_log)?;
    // QEMU must not outlive us (Ctrl-C, a killed tier): the kernel kills it when we die.
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("could not start `{line}` (is qemu-system-x86 installed?)"))?;

    let start = Instant::now();
    let mut echo = Echo { offset: 0, pending: String::new(), prefix: b.echo };
    let mut ready = false;
    let exit = loop {
        echo.poll(&output_log);
        if let Some(status) = child.try_wait()? {
            break Ok(status);
        }
        ready = ready || fs::read_to_string(&console_log).is_ok_and(|c| c.contains(READY_LINE));
        let hung = !ready && start.elapsed() >= BOOT_READY_LIMIT && BOOT_READY_LIMIT < b.timeout;
        if hung || start.elapsed() >= b.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break Err(hung);
        }
        thread::sleep(POLL);
    };
    echo.poll(&output_log);
    echo.flush();
    let elapsed = start.elapsed();

    let output = fs::read_to_string(&output_log).unwrap_or_default();
    let console = fs::read_to_string(&console_log).unwrap_or_default();
    let release = &b.kernel.meta.release;
    let context = || diagnostics(&console, &qemu_log, &console_log);
    match (b.marker.find(&output), exit) {
        (Some(Report::Exited(status)), _) => {
            Ok(Finished { status, output: b.marker.strip(&output), elapsed, console_log })
        }
        (Some(Report::InitFailed(why)), _) => bail!("guest {release}: /init failed: {why}{}", context()),
        (None, Err(true)) => Err(BootHung { release: release.clone(), waited: elapsed, context: context() }.into()),
        (None, Err(false)) => {
            bail!("guest {release}: timeout: no exit marker after {} s, QEMU killed{}", b.timeout.as_secs(), context())
        }
        (None, Ok(_)) if console.contains("Kernel panic") => {
            bail!("guest {release}: kernel panic after {:.1} s{}", elapsed.as_secs_f64(), context())
        }
        (None, Ok(status)) => bail!(
            "guest {release}: boot failed: QEMU exited ({status}) after {:.1} s without the command's exit \
             marker{}",
            elapsed.as_secs_f64(),
            context()
        ),
    }
}

/// The guest never got to `/init`'s ready line: the kernel hung while booting (seen once under
/// TCG on a heavily loaded host). A caller may retry such a boot.
#[derive(Debug)]
pub struct BootHung {
    pub release: String,
    pub waited: Duration,
    context: String,
}

impl std::fmt::Display for BootHung {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "guest {}: boot hung: /init did not report ready within {:.0} s, QEMU killed{}",
            self.release,
            self.waited.as_secs_f64(),
            self.context
        )
    }
}

impl std::error::Error for BootHung {}

fn command(b: &Boot, console_log: &Path, output_log: &Path) -> Command {
    let mut cmd = Command::new(QEMU);
    cmd.args(["-accel", "tcg", "-cpu", "max"])
        .args(["-m", &b.memory_mib.to_string(), "-smp", &b.cpus.to_string()])
        .args(["-nographic", "-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(b.kernel.vmlinuz())
        .arg("-initrd")
        .arg(b.initrd)
        // panic=-1: reboot at once on a panic, which -no-reboot turns into QEMU exiting.
        .args(["-append", "console=ttyS0 rdinit=/init panic=-1 random.trust_cpu=on"])
        .arg("-serial")
        .arg(format!("file:{}", console_log.display()))
        .arg("-serial")
        .arg(format!("file:{}", output_log.display()));
    cmd
}

/// The console tail and QEMU's own messages, for errors.
fn diagnostics(console: &str, qemu_log: &Path, console_log: &Path) -> String {
    let qemu = fs::read_to_string(qemu_log).unwrap_or_default();
    let qemu = qemu.trim();
    let qemu = if qemu.is_empty() { String::new() } else { format!("\n--- QEMU said ---\n{qemu}") };
    format!(
        "\n--- last {TAIL_LINES} console lines ({}) ---\n{}{qemu}",
        console_log.display(),
        tail(&printable(console), TAIL_LINES)
    )
}

/// The console without terminal control sequences (SeaBIOS clears the screen) and CRs.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final-byte; other escapes: drop the next char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    while let Some(&n) = chars.peek() {
                        chars.next();
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Echoes complete new lines of the output log after a prefix (`guest| …`).
struct Echo<'a> {
    offset: u64,
    pending: String,
    prefix: Option<&'a str>,
}

impl Echo<'_> {
    fn poll(&mut self, path: &Path) {
        let Ok(mut f) = fs::File::open(path) else { return };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if let Ok(n) = f.read_to_end(&mut buf) {
            self.offset += n as u64;
            self.pending.push_str(&String::from_utf8_lossy(&buf));
        }
        while let Some(i) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=i).collect();
            self.show(&line);
        }
    }

    fn flush(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            self.show(&rest);
        }
    }

    fn show(&self, line: &str) {
        // Marker and result lines are for the harness (all of them are in output.log).
        if let Some(prefix) = self.prefix.filter(|_| !line.starts_with("MMUSCOPE-")) {
            println!("{prefix} {}", line.trim_end_matches(['\r', '\n']));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_noise_is_removed() {
        let raw = "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r\n[    0.0] Linux\r\n";
        assert_eq!(printable(raw), "SeaBIOS (version 1.16.2)\n[    0.0] Linux\n");
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
    }
}
