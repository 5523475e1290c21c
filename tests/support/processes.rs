//! Child processes: each in its own process group, its output collected as
//! it comes, bounded in time, and killed with its whole group.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Lines a child process wrote, collected by reader threads as they come.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    pub(super) fn collect(&self, stream: impl Read + Send + 'static, prefix: &'static str) {
        let lines = self.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let (buf, cond) = &*lines.0;
                buf.lock().unwrap().push(format!("{prefix}{line}"));
                cond.notify_all();
            }
        });
    }

    /// Everything so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the lines so far, or `limit` passes;
    /// returns whether it held.
    pub fn wait_until(&self, limit: Duration, mut done: impl FnMut(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let (buf, cond) = &*self.0;
        let mut lines = buf.lock().unwrap();
        loop {
            if done(&lines) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            lines = cond.wait_timeout(lines, left).unwrap().0;
        }
    }
}

impl fmt::Debug for Lines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.snapshot() {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}

/// Sends `signal` (`"KILL"`, `"TERM"`) to a process, or with a `-` before
/// the id to a process group. The tests have no libc/nix-signal dependency:
/// the shell's builtin kill (dash, always there) does it.
pub(super) fn send_signal(signal: &str, target: &str) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -s {signal} -- {target}")])
        .stderr(Stdio::null())
        .status();
}

/// SIGKILL to a whole process group (the child was started as its leader),
/// then reap the child.
pub(super) fn kill_group(child: &mut Child) {
    send_signal("KILL", &format!("-{}", child.id()));
    let _ = child.kill();
    let _ = child.wait();
}

/// A finished, time-limited run of a command.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Whether `timeout` had to stop it (TERM: 124, then KILL: 137).
    pub fn timed_out(&self) -> bool {
        matches!(self.status.code(), Some(124 | 137)) || self.status.signal().is_some()
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The tail is where the error is; keep failure messages readable.
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n    ")
        };
        write!(
            f,
            "exit {:?}\n  stdout:\n    {}\n  stderr:\n    {}",
            self.status,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}

/// Runs `cmd` under `timeout -k 3 LIMIT` in its own process group (players
/// can ignore SIGTERM while stuck in an RTSP read), collects its output, and
/// kills whatever is left of the group.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut wrapped = Command::new("timeout");
    wrapped
        .args(["-k", "3", &format!("{}", limit.as_secs().max(1))])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    let mut child = wrapped
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    // Read both pipes at once so neither can fill up and block the child.
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let mut stdout = Vec::new();
    let _ = child.stdout.take().unwrap().read_to_end(&mut stdout);
    let status = child.wait().expect("wait for player");
    kill_group(&mut child);
    Output {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned(),
    }
}
