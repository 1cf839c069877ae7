//! `code` tools: Python the model wrote, run in a sandbox.
//!
//! One call is one process tree: `prlimit` (util-linux) sets the rlimits
//! and execs bubblewrap, which runs the interpreter in new user, pid,
//! network, ipc, uts and cgroup namespaces with nothing of the host but the
//! configured system paths, read-only, and two private size-bounded tmpfs
//! (`/work`, the working directory, and `/tmp`). The source arrives on the
//! interpreter's stdin (`python3 -I -B -u -`), so no host file is written.
//!
//! | limit | how |
//! |---|---|
//! | network | `--unshare-net`: a namespace of its own with only its own loopback |
//! | host writes | only the tmpfs are writable; every host path is `--ro-bind` |
//! | CPU time | `RLIMIT_CPU` (SIGXCPU, then SIGKILL a second later) |
//! | wall time | the tool's `timeout`: the sandbox is killed; `--die-with-parent` and the pid namespace take every process of it down, `setsid` or not |
//! | memory | `RLIMIT_AS` per process (an allocation fails: `MemoryError`) |
//! | processes | `RLIMIT_NPROC` under a user id of the run's own (`uid_base + slot`) |
//! | output | stdout and stderr are read up to `max_output_bytes`, then the run is killed |
//! | files | tmpfs `size=` and `RLIMIT_FSIZE` |
//!
//! `RLIMIT_NPROC` counts every process of a user id, and does not apply to
//! root at all, so the worker (as root) starts each run under an unused id
//! from a pool; a worker that is not root refuses to run code rather than
//! run it without a process limit. The module must never run the program as
//! root, with a network, or with a host path writable, nor leave a process
//! of it behind when the call returns.

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use mesh_spec::CodeConfig;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Notify;

use super::ToolOutput;
use crate::config::CodeLimits;

/// Used when the tool's config sets none (each capped by the worker).
const DEFAULT_CPU_SECONDS: u32 = 5;
const DEFAULT_MEMORY_MB: u32 = 256;
const DEFAULT_MAX_PROCESSES: u32 = 16;

/// bwrap's own two processes (the outer monitor and the namespace's init),
/// which run under the run's user id too.
const BWRAP_PROCESSES: u32 = 2;

pub struct CodeTool {
    cpu_seconds: u32,
    memory_mb: u32,
    max_processes: u32,
    sandbox: CodeLimits,
}

/// How a run ended, before it is told to the model.
enum Ended {
    Exited(std::process::ExitStatus),
    OutputTooLarge,
    Broken(std::io::Error),
}

impl CodeTool {
    pub fn new(config: CodeConfig, limits: &CodeLimits) -> Self {
        Self {
            cpu_seconds: config
                .cpu_seconds
                .unwrap_or(DEFAULT_CPU_SECONDS)
                .min(limits.max_cpu_seconds),
            memory_mb: config
                .memory_mb
                .unwrap_or(DEFAULT_MEMORY_MB)
                .min(limits.max_memory_mb),
            max_processes: config
                .max_processes
                .unwrap_or(DEFAULT_MAX_PROCESSES)
                .min(limits.max_processes),
            sandbox: limits.clone(),
        }
    }

    /// Runs `arguments.code`; `wall` is the tool's timeout.
    pub async fn call(&self, arguments: &Value, wall: Duration) -> ToolOutput {
        let Some(code) = arguments.get("code").and_then(Value::as_str) else {
            return ToolOutput::error(
                "a code tool takes the Python source as the string argument \"code\"",
            );
        };
        if !running_as_root() {
            tracing::warn!(
                "code tools need the worker to run as root (to drop each run to its own user id)"
            );
            return ToolOutput::error(
                "the code sandbox is not available on this worker (it must start as root to give each run its own unprivileged user)",
            );
        }
        if !Path::new(&self.sandbox.python).exists() {
            return ToolOutput::error(format!(
                "the code sandbox is not available on this worker ({} is missing)",
                self.sandbox.python
            ));
        }
        let wall = wall.min(self.sandbox.max_wall);
        let slot = Slot::acquire(self.sandbox.max_concurrent).await;
        let uid = self.sandbox.uid_base.saturating_add(slot.0);
        let mut child = match self.command(uid).spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::warn!(error = %e, prlimit = %self.sandbox.prlimit, "the code sandbox did not start");
                return ToolOutput::error(format!(
                    "the code sandbox is not available on this worker ({} could not be started: {})",
                    self.sandbox.prlimit,
                    e.kind()
                ));
            }
        };
        let started = Instant::now();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let run = async {
            if let Some(mut stdin) = child.stdin.take() {
                // A failed write means the sandbox did not come up; its exit
                // status and stderr say why.
                let _ = stdin.write_all(code.as_bytes()).await;
            }
            let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
                return Ended::Broken(std::io::Error::other("the sandbox's pipes are missing"));
            };
            if read_capped(
                out,
                err,
                &mut stdout,
                &mut stderr,
                self.sandbox.max_output_bytes,
            )
            .await
            {
                return Ended::OutputTooLarge;
            }
            match child.wait().await {
                Ok(status) => Ended::Exited(status),
                Err(e) => Ended::Broken(e),
            }
        };
        let ended = tokio::time::timeout(wall, run).await;
        if !matches!(ended, Ok(Ended::Exited(_))) {
            // Killing bwrap's outer process kills the namespace's init
            // (--die-with-parent), and with it every process of the run.
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        drop(slot);
        let elapsed = started.elapsed();
        let output = self.outcome(ended, wall, &stdout, &stderr);
        tracing::debug!(
            elapsed_ms = elapsed.as_millis() as u64,
            is_error = output.is_error,
            "code run finished"
        );
        output
    }

    fn command(&self, uid: u32) -> tokio::process::Command {
        let limits = &self.sandbox;
        let work_bytes = u64::from(limits.work_dir_mb) * 1024 * 1024;
        let mut cmd = tokio::process::Command::new(&limits.prlimit);
        cmd.arg(format!(
            "--cpu={}:{}",
            self.cpu_seconds,
            self.cpu_seconds.saturating_add(1)
        ))
        .arg(format!("--as={}", u64::from(self.memory_mb) * 1024 * 1024))
        .arg(format!(
            "--nproc={}",
            self.max_processes.saturating_add(BWRAP_PROCESSES)
        ))
        .arg(format!("--fsize={work_bytes}"))
        .arg("--core=0")
        .arg("--nofile=256")
        .arg(&limits.bwrap)
        .args([
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--hostname",
            "sandbox",
        ]);
        for path in &limits.readonly_paths {
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(path) {
                        cmd.arg("--symlink").arg(target).arg(path);
                    }
                }
                Ok(_) => {
                    cmd.args(["--ro-bind", path, path]);
                }
                Err(_) => {}
            }
        }
        let size = work_bytes.to_string();
        cmd.args(["--proc", "/proc", "--dev", "/dev"])
            .args(["--size", &size, "--tmpfs", "/work"])
            .args(["--size", &size, "--tmpfs", "/tmp"])
            .args(["--chdir", "/work"])
            .args(["--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin"])
            .args(["--setenv", "HOME", "/work"])
            .args(["--setenv", "TMPDIR", "/tmp"])
            .args(["--setenv", "LANG", "C.UTF-8"])
            .arg("--")
            .arg(&limits.python)
            // Isolated (no PYTHON* variables, no user site), no bytecode
            // files, unbuffered: what was printed before a limit stopped
            // the run reaches the model too.
            .args(["-I", "-B", "-u", "-"]);
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        // std drops the supplementary groups when it changes the user id.
        cmd.uid(uid)
            .gid(uid)
            .process_group(0)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    fn outcome(
        &self,
        ended: Result<Ended, tokio::time::error::Elapsed>,
        wall: Duration,
        stdout: &[u8],
        stderr: &[u8],
    ) -> ToolOutput {
        let out = String::from_utf8_lossy(stdout);
        let err = String::from_utf8_lossy(stderr);
        let status = match ended {
            Err(_) => {
                return ToolOutput::error(with_streams(
                    format!(
                        "the code ran longer than its wall time limit of {} ms and was stopped",
                        wall.as_millis()
                    ),
                    &out,
                    &err,
                ));
            }
            Ok(Ended::OutputTooLarge) => {
                return ToolOutput::error(with_streams(
                    format!(
                        "the code printed more than {} bytes and was stopped",
                        self.sandbox.max_output_bytes
                    ),
                    &out,
                    &err,
                ));
            }
            Ok(Ended::Broken(e)) => {
                return ToolOutput::error(format!("the code sandbox failed: {e}"));
            }
            Ok(Ended::Exited(status)) => status,
        };
        if let Some(signal) = status.signal() {
            return ToolOutput::error(with_streams(
                format!("the code sandbox was killed by signal {signal}"),
                &out,
                &err,
            ));
        }
        // bwrap exits with the program's status, or 128 + the signal that
        // ended it.
        let code = status.code().unwrap_or(-1);
        if code == 0 {
            let mut text = out.into_owned();
            if !err.trim().is_empty() {
                text.push_str("\n[stderr]\n");
                text.push_str(&err);
            }
            if text.trim().is_empty() {
                text = "(the code printed nothing)".to_owned();
            }
            return ToolOutput::ok(text);
        }
        if err.starts_with("bwrap:") || err.starts_with("prlimit:") {
            tracing::warn!(stderr = %err.trim(), "the code sandbox did not start");
            return ToolOutput::error(format!(
                "the code sandbox could not start on this worker: {}",
                err.trim()
            ));
        }
        let headline = match code {
            152 => format!(
                "the code used up its CPU time limit of {} s and was stopped",
                self.cpu_seconds
            ),
            137 => format!(
                "the code was killed (SIGKILL): it passed its CPU time limit of {} s, or memory ran out",
                self.cpu_seconds
            ),
            c if c > 128 => format!("the code was killed by signal {}", c - 128),
            c => format!("the code exited with status {c}{}", self.hint(&err)),
        };
        ToolOutput::error(with_streams(headline, &out, &err))
    }

    /// What the sandbox's limits have to do with a failure, when stderr
    /// shows it.
    fn hint(&self, stderr: &str) -> String {
        let has = |needles: &[&str]| needles.iter().any(|n| stderr.contains(n));
        let why = if has(&["MemoryError"]) {
            format!(
                "the program ran out of memory (limit {} MiB per process)",
                self.memory_mb
            )
        } else if has(&["BlockingIOError", "Resource temporarily unavailable"]) {
            format!(
                "the program reached its limit of {} processes",
                self.max_processes
            )
        } else if has(&[
            "Network is unreachable",
            "Connection refused",
            "Temporary failure in name resolution",
            "Name or service not known",
            "Address family not supported",
        ]) {
            "the sandbox has no network".to_owned()
        } else if has(&["Read-only file system"]) {
            "only /work and /tmp are writable".to_owned()
        } else if has(&["Permission denied"]) {
            "the program runs as an unprivileged user; only /work and /tmp are writable".to_owned()
        } else if has(&["No space left on device", "File too large"]) {
            format!(
                "the work directory holds at most {} MiB",
                self.sandbox.work_dir_mb
            )
        } else {
            return String::new();
        };
        format!(": {why}")
    }
}

/// The headline, then the ends of what the program printed.
fn with_streams(headline: String, stdout: &str, stderr: &str) -> String {
    const TAIL: usize = 2000;
    let tail = |s: &str| {
        let n = s.chars().count();
        if n <= TAIL {
            s.to_owned()
        } else {
            format!("...{}", s.chars().skip(n - TAIL).collect::<String>())
        }
    };
    let mut text = headline;
    if !stderr.trim().is_empty() {
        text.push_str("\n[stderr]\n");
        text.push_str(&tail(stderr));
    }
    if !stdout.trim().is_empty() {
        text.push_str("\n[stdout]\n");
        text.push_str(&tail(stdout));
    }
    text
}

/// Reads both pipes to their end; true as soon as together they pass
/// `cap` bytes (the caller then kills the run).
async fn read_capped(
    mut stdout: impl AsyncRead + Unpin,
    mut stderr: impl AsyncRead + Unpin,
    out: &mut Vec<u8>,
    err: &mut Vec<u8>,
    cap: usize,
) -> bool {
    let (mut out_buf, mut err_buf) = ([0u8; 8192], [0u8; 8192]);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        tokio::select! {
            read = stdout.read(&mut out_buf), if out_open => match read {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => out.extend_from_slice(&out_buf[..n]),
            },
            read = stderr.read(&mut err_buf), if err_open => match read {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => err.extend_from_slice(&err_buf[..n]),
            },
        }
        if out.len() + err.len() > cap {
            out.truncate(cap);
            err.truncate(cap.saturating_sub(out.len()));
            return true;
        }
    }
    false
}

/// The effective user id, from the owner of `/proc/self` (no unsafe code).
fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0))
}

/// A run's index in the pool of user ids, held while it runs. The pool is
/// the process's, not a worker's: every worker of the process (tests start
/// several) draws from the same ids, so no two runs ever share one.
struct Slot(u32);

static SLOTS: Mutex<Vec<bool>> = Mutex::new(Vec::new());
static SLOT_FREED: Notify = Notify::const_new();

impl Slot {
    async fn acquire(max: u32) -> Self {
        loop {
            let freed = SLOT_FREED.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = Self::try_take(max) {
                return slot;
            }
            freed.await;
        }
    }

    fn try_take(max: u32) -> Option<Self> {
        let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
        let max = max as usize;
        if slots.len() < max {
            slots.resize(max, false);
        }
        let index = slots.iter().take(max).position(|used| !used)?;
        slots[index] = true;
        u32::try_from(index).ok().map(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(used) = slots.get_mut(self.0 as usize) {
            *used = false;
        }
        drop(slots);
        SLOT_FREED.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool() -> CodeTool {
        let config = crate::config::Config::from_env(&mesh_runtime::Env::new()).unwrap();
        CodeTool::new(
            CodeConfig {
                language: "python".into(),
                cpu_seconds: Some(999),
                memory_mb: None,
                max_processes: Some(3),
            },
            &config.tools.code,
        )
    }

    #[test]
    fn limits_are_capped_by_the_worker() {
        let t = tool();
        assert_eq!(
            (t.cpu_seconds, t.memory_mb, t.max_processes),
            (30, DEFAULT_MEMORY_MB, 3)
        );
    }

    #[test]
    fn failures_name_the_limit() {
        let t = tool();
        assert!(t.hint("Traceback\nMemoryError\n").contains("256 MiB"));
        assert!(
            t.hint("BlockingIOError: [Errno 11] Resource temporarily unavailable")
                .contains("3 processes")
        );
        assert!(
            t.hint("OSError: [Errno 101] Network is unreachable")
                .contains("no network")
        );
        assert!(
            t.hint("OSError: [Errno 30] Read-only file system: '/etc/x'")
                .contains("/work")
        );
        assert_eq!(t.hint("ZeroDivisionError: division by zero"), "");
    }

    #[tokio::test]
    async fn output_past_the_cap_stops_reading() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let big = vec![b'x'; 10_000];
        assert!(read_capped(&big[..], &b"warn"[..], &mut out, &mut err, 1000).await);
        assert!(out.len() + err.len() <= 1000);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(!read_capped(&b"ok"[..], &b"warn"[..], &mut out, &mut err, 1000).await);
        assert_eq!((out.as_slice(), err.as_slice()), (&b"ok"[..], &b"warn"[..]));
    }

    #[tokio::test]
    async fn slots_are_never_shared() {
        let a = Slot::acquire(2).await;
        let b = Slot::acquire(2).await;
        assert_ne!(a.0, b.0);
        let waiting = tokio::spawn(async { Slot::acquire(2).await.0 });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a third run waits for a slot");
        let freed = a.0;
        drop(a);
        assert_eq!(waiting.await.unwrap(), freed);
        drop(b);
    }
}
