//! External commands with a hard time limit: every tool the VM harness calls (apt, dpkg-deb,
//! depmod, cpio, QEMU) is killed when it overruns, and a failure names the command and its status.

use std::{
    io::Read,
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::process;

/// How often a running child is polled.
const POLL: Duration = Duration::from_millis(50);

/// Runs `cmd` with inherited stdout (shown live) after echoing it; its stderr is captured and
/// both shown and quoted in the error when it fails.
pub fn run_shown(cmd: &mut Command, limit: Duration) -> Result<()> {
    let line = process::describe(cmd);
    println!("$ {line}");
    cmd.stdin(Stdio::null()).stdout(Stdio::inherit()).stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("could not start `{line}`"))?;
    let stderr = reader(child.stderr.take());
    let status = wait_within(&mut child, limit, &line)?;
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    eprint!("{stderr}");
    if !status.success() {
        bail!("`{line}` failed ({status}){}", quoted(&stderr));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its output; an error if it overruns or exits non-zero (with its
/// stderr quoted).
pub fn output(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let out = output_any_status(cmd, limit)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("`{}` failed ({}){}", process::describe(cmd), out.status, quoted(&stderr));
    }
    Ok(out)
}

/// Runs `cmd` quietly and returns its output whatever its exit status; an error only if it cannot
/// start or overruns.
pub fn output_any_status(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let line = process::describe(cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("could not start `{line}`"))?;
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let status = wait_within(&mut child, limit, &line)?;
    Ok(Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() })
}

/// Waits for `child`; kills it (and says so) when `limit` passes first.
pub fn wait_within(child: &mut Child, limit: Duration, line: &str) -> Result<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().with_context(|| format!("waiting for `{line}`"))? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{line}` did not finish within {} s and was killed", limit.as_secs());
        }
        thread::sleep(POLL);
    }
}

/// `: <text>` with the trimmed text, or nothing for empty text.
fn quoted(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() { String::new() } else { format!(": {text}") }
}

/// Reads a pipe to its end on a thread (so a chatty child never blocks on a full pipe); the
/// bytes as they are (stdout may be binary, e.g. `xz -dc`).
fn reader(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrunning_commands_are_killed_and_named() {
        let mut cmd = Command::new("sleep");
        cmd.arg("5");
        let err = output(&mut cmd, Duration::from_millis(200)).unwrap_err();
        assert!(format!("{err:#}").contains("`sleep 5` did not finish within 0 s"), "{err:#}");
    }

    #[test]
    fn failures_quote_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo oops >&2; exit 3"]);
        let err = output(&mut cmd, Duration::from_secs(10)).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("exit status: 3") && text.ends_with(": oops"), "{text}");
        let out = output_any_status(&mut cmd, Duration::from_secs(10)).unwrap();
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn binary_output_is_kept_byte_for_byte() {
        let mut cmd = Command::new("printf");
        cmd.arg(r"\377\000\177ELF");
        assert_eq!(output(&mut cmd, Duration::from_secs(10)).unwrap().stdout, b"\xff\x00\x7fELF");
    }
}
