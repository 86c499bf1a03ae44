//! A booted Debian system under QEMU: a [`rootfs`](super::rootfs) image with systemd as PID 1, reached the way a
//! fleet host is reached — its TCP ports through QEMU's user-mode networking (`hostfwd` on the host's loopback) —
//! plus a command channel for the test (the image's `fleet-driver` on the second serial port, a Unix socket here).
//!
//! `qemu-system-x86_64 -accel tcg -cpu max` (as the `vm` harness: TCG with `-cpu max` gives nested KVM through
//! kvm-amd), the root disk with `snapshot=on` (writes go to a temporary overlay, the cached image never changes), an
//! optional read-only second disk with the files under test, the kernel console on `ttyS0` → `console.log`.
//! QEMU dies with us (PR_SET_PDEATHSIG) and is killed when this value is dropped.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::{net::UnixStream, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{exec, kernels::CachedKernel, qemu, rootfs::Image};

/// The kernel command line: console on ttyS0, classic interface names (the initramfs configures `eth0`), kernel
/// audit on so that seccomp kills and LSM denials are logged to the journal as on an audited host.
const CMDLINE: &str = "console=ttyS0 net.ifnames=0 panic=-1 random.trust_cpu=on audit=1";
const POLL: Duration = Duration::from_millis(100);
/// How long one hello may wait for an answer before it is sent again (the driver may not be listening yet).
const HELLO_EVERY: Duration = Duration::from_secs(3);

/// How to boot.
pub struct Boot<'a> {
    pub kernel: &'a CachedKernel,
    pub image: &'a Image,
    /// Logs, the sockets and QEMU's temporary overlay go here.
    pub dir: &'a Path,
    /// An ext4 image attached read-only as `/dev/vdb`, e.g. from [`data_disk`].
    pub data_disk: Option<&'a Path>,
    /// `(host port on 127.0.0.1, guest port)`.
    pub forwards: &'a [(u16, u16)],
    pub memory_mib: u32,
    pub cpus: u32,
    /// From QEMU's start until the command channel answers.
    pub ready_limit: Duration,
}

/// One command's result.
pub struct Ran {
    pub status: i32,
    /// stdout and stderr, interleaved as the command wrote them.
    pub output: String,
    pub seconds: f64,
}

pub struct SystemGuest {
    child: Child,
    lines: Receiver<String>,
    socket: UnixStream,
    next_id: u64,
    pub console_log: PathBuf,
    pub release: String,
    /// Seconds from QEMU's start until the command channel answered.
    pub boot_seconds: f64,
}

impl SystemGuest {
    /// Starts QEMU and waits until the guest's command channel answers (systemd has started `fleet-driver.service`).
    pub fn boot(b: &Boot) -> Result<Self> {
        fs::create_dir_all(b.dir)?;
        let console_log = b.dir.join("console.log");
        let socket_path = b.dir.join("driver.sock");
        let _ = fs::remove_file(&socket_path);
        fs::write(&console_log, "")?;
        let mut cmd = command(b, &console_log, &socket_path);
        let line = crate::process::describe(&cmd);
        println!("$ {line}");
        let log = fs::File::create(b.dir.join("qemu.log"))?;
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .env("TMPDIR", b.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("could not start `{line}` (is qemu-system-x86 installed?)"))?;
        let started = Instant::now();
        let mut guest = Self::attach(child, &socket_path, console_log, b.kernel.meta.release.clone(), b.ready_limit)?;
        guest.hello(started, b.ready_limit)?;
        guest.boot_seconds = started.elapsed().as_secs_f64();
        Ok(guest)
    }

    fn attach(mut child: Child, socket: &Path, console_log: PathBuf, release: String, limit: Duration) -> Result<Self> {
        let started = Instant::now();
        let stream = loop {
            if let Ok(s) = UnixStream::connect(socket) {
                break s;
            }
            if let Some(status) = child.try_wait()? {
                bail!("QEMU exited ({status}) before opening {}", socket.display());
            }
            if started.elapsed() > limit.min(Duration::from_secs(30)) {
                let _ = child.kill();
                bail!("QEMU did not open {} within 30 s", socket.display());
            }
            thread::sleep(POLL);
        };
        let reader = stream.try_clone()?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines, socket: stream, next_id: 1, console_log, release, boot_seconds: 0.0 })
    }

    /// Sends a trivial command until one is answered.
    fn hello(&mut self, started: Instant, limit: Duration) -> Result<()> {
        loop {
            let id = self.send("true", 10)?;
            match self.collect(id, Instant::now() + HELLO_EVERY) {
                Ok(_) => return Ok(()),
                Err(Wait::TimedOut) if started.elapsed() < limit => continue,
                Err(Wait::TimedOut) => {
                    let _ = self.child.kill();
                    bail!(
                        "guest {}: the command channel did not answer within {} s of QEMU's start{}",
                        self.release,
                        limit.as_secs(),
                        self.diagnostics()
                    )
                }
                Err(Wait::Failed(e)) => return Err(e),
            }
        }
    }

    /// Runs `command` with bash as root in the guest (working directory `/root`), killed after `limit`.
    pub fn run(&mut self, command: &str, limit: Duration) -> Result<Ran> {
        let started = Instant::now();
        let id = self.send(command, limit.as_secs().max(1))?;
        let deadline = Instant::now() + limit + Duration::from_secs(20);
        match self.collect(id, deadline) {
            Ok((status, output)) => Ok(Ran { status, output, seconds: started.elapsed().as_secs_f64() }),
            Err(Wait::TimedOut) => {
                bail!(
                    "guest {}: no answer to `{command}` within {} s{}",
                    self.release,
                    limit.as_secs(),
                    self.diagnostics()
                )
            }
            Err(Wait::Failed(e)) => Err(e.context(format!("running `{command}` in the guest"))),
        }
    }

    /// [`run`](Self::run) that must exit 0; its output.
    pub fn ok(&mut self, command: &str, limit: Duration) -> Result<String> {
        let ran = self.run(command, limit)?;
        if ran.status != 0 {
            bail!("`{command}` exited with {} in the guest:\n{}", ran.status, ran.output.trim_end());
        }
        Ok(ran.output)
    }

    fn send(&mut self, command: &str, limit_secs: u64) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let line = format!("CMD {id} {limit_secs} {}\n", base64_encode(command.as_bytes()));
        self.socket.write_all(line.as_bytes()).context("writing to the guest's command channel")?;
        Ok(id)
    }

    /// Gathers the answer to command `id`: its status and output.
    fn collect(&mut self, id: u64, deadline: Instant) -> Result<(i32, String), Wait> {
        let mut encoded = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok(line) => {
                    let mut words = line.split_whitespace();
                    let (kind, got, rest) = (words.next(), words.next(), words.next());
                    if got != Some(id.to_string().as_str()) {
                        continue;
                    }
                    match (kind, rest) {
                        (Some("OUT"), Some(piece)) => encoded.push_str(piece),
                        (Some("END"), Some(status)) => {
                            let bytes = base64_decode(&encoded).map_err(Wait::Failed)?;
                            let status = status.parse().unwrap_or(-1);
                            return Ok((status, String::from_utf8_lossy(&bytes).into_owned()));
                        }
                        _ => {}
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Wait::Failed(anyhow::anyhow!(
                        "guest {}: the command channel closed{}",
                        self.release,
                        self.diagnostics()
                    )));
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Wait::Failed(anyhow::anyhow!(
                    "guest {}: QEMU exited ({status}){}",
                    self.release,
                    self.diagnostics()
                )));
            }
            if Instant::now() >= deadline {
                return Err(Wait::TimedOut);
            }
        }
    }

    /// The last `n` lines of the kernel console (without terminal control sequences).
    pub fn console_tail(&self, n: usize) -> String {
        qemu::tail(&qemu::printable(&fs::read_to_string(&self.console_log).unwrap_or_default()), n)
    }

    fn diagnostics(&self) -> String {
        format!("\n--- last 30 console lines ({}) ---\n{}", self.console_log.display(), self.console_tail(30))
    }

    /// `systemctl poweroff`, then waits up to a minute for QEMU to exit (killed after that).
    pub fn shutdown(mut self) -> Result<()> {
        let _ = self.send("systemctl --no-block poweroff", 30);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(200));
        }
        bail!("guest {}: did not power off within 60 s; QEMU killed{}", self.release, self.diagnostics())
    }
}

impl Drop for SystemGuest {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

enum Wait {
    TimedOut,
    Failed(anyhow::Error),
}

fn command(b: &Boot, console_log: &Path, socket: &Path) -> Command {
    let mut cmd = Command::new(qemu::QEMU);
    cmd.args(["-accel", "tcg", "-cpu", "max"])
        .args(["-m", &b.memory_mib.to_string(), "-smp", &b.cpus.to_string()])
        .args(["-nographic", "-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(b.kernel.vmlinuz())
        .arg("-initrd")
        .arg(b.image.initrd())
        .args(["-append", CMDLINE])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio,snapshot=on", b.image.disk().display()));
    if let Some(disk) = b.data_disk {
        cmd.arg("-drive").arg(format!("file={},format=raw,if=virtio,readonly=on", disk.display()));
    }
    let mut netdev = "user,id=net0,restrict=on".to_string();
    for (host, guest) in b.forwards {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    cmd.args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"])
        .arg("-serial")
        .arg(format!("file:{}", console_log.display()))
        .arg("-chardev")
        .arg(format!("socket,id=driver,path={},server=on,wait=off", socket.display()))
        .args(["-serial", "chardev:driver"]);
    cmd
}

/// An ext4 image (`mkfs.ext4 -d`, nothing mounted) holding `files` as `(host path, name in the image)`.
pub fn data_disk(dir: &Path, files: &[(PathBuf, String)]) -> Result<PathBuf> {
    let stage = dir.join("data");
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage)?;
    let mut bytes = 0;
    for (host, name) in files {
        fs::copy(host, stage.join(name)).with_context(|| format!("copying {}", host.display()))?;
        bytes += fs::metadata(host)?.len();
    }
    let image = dir.join("data.ext4");
    let mib = bytes / (1 << 20) + 32;
    exec::output(
        Command::new("mkfs.ext4").args(["-q", "-F", "-L", "data", "-d"]).arg(&stage).arg(&image).arg(format!("{mib}M")),
        Duration::from_secs(120),
    )?;
    fs::remove_dir_all(&stage)?;
    Ok(image)
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let v = BASE64.iter().position(|x| *x == c).with_context(|| format!("not base64: {:?}", c as char))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_like_coreutils() {
        assert_eq!(base64_encode(b"true"), "dHJ1ZQ==");
        assert_eq!(base64_encode(b"systemctl is-active x"), "c3lzdGVtY3RsIGlzLWFjdGl2ZSB4");
        for text in ["", "a", "ab", "abc", "abcd", "héllo\nwörld\n\0\u{7f}"] {
            assert_eq!(base64_decode(&base64_encode(text.as_bytes())).unwrap(), text.as_bytes());
        }
        assert_eq!(base64_decode("aGVs\nbG8K").unwrap(), b"hello\n");
        assert!(base64_decode("a*b").is_err());
    }
}
