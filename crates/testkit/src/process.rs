//! The child-process launcher: starts a server-like binary (`nano-banana serve`, `nano-banana
//! fake-gemini`, the benchmark's static file server) as a child process, learns or is told its
//! base URL, waits until it answers, reads its CPU time and peak RSS from `/proc`, and kills and
//! reaps it when dropped, so that a failed test or benchmark leaves no process behind.
//!
//! Two ways to know where a child listens, one per user. The benchmark starts each child on port
//! 0 and reads the address it prints ([`ChildProcess::spawn_announced`]): no race for a port
//! between choosing and binding it. The tests choose the port first ([`free_port`],
//! [`ChildProcess::spawn_at`]): a server killed mid-flight must come back at the same address,
//! which its stored image URLs name.
//!
//! What it does not do: build the command line (flags, environment, where stderr goes are the
//! caller's; the tests and the benchmark configure the server differently), or run anything
//! to completion (`Command::output` does that).

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// How long a child gets to print its address, and then to answer its health check.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running child process; killed (if still running) and reaped when dropped.
pub struct ChildProcess {
    /// What the child is, for error messages ("server", "fake Gemini upstream", …).
    name: String,
    /// Public so that a test can SIGKILL it mid-flight (`child.kill()`, then `child.wait()`) and
    /// check that it is still running (`child.try_wait()`).
    pub child: Child,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
}

impl ChildProcess {
    /// Starts `command` with stdout piped and waits ([`START_TIMEOUT`] at most) for a stdout line
    /// containing `marker`, followed by the child's base URL (`http://…`). stdout is drained
    /// after that line so the child never blocks on a full pipe; stdin, stderr, arguments and
    /// environment stay as `command` has them.
    pub fn spawn_announced(
        name: &str,
        mut command: Command,
        marker: &str,
    ) -> anyhow::Result<ChildProcess> {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the {name} ({command:?})"))?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let (found, address) = mpsc::channel();
        let marker = marker.to_owned();
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split_once(&marker).map(|(_, rest)| rest)
                    && let Some(sender) = found.take()
                {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = sender.send(url.trim_end_matches('/').to_owned());
                }
            }
        });
        let mut process = ChildProcess {
            name: name.to_owned(),
            child,
            base_url: String::new(),
        };
        match address.recv_timeout(START_TIMEOUT) {
            Ok(url) if url.starts_with("http://") => process.base_url = url,
            _ => bail!(
                "the {name} did not print its address within {START_TIMEOUT:?} (exit status: {:?})",
                process.child.try_wait().ok().flatten(),
            ),
        }
        Ok(process)
    }

    /// Starts `command`, a child told to listen at `base_url` (`http://127.0.0.1:PORT`, the port
    /// chosen beforehand). Returns at once: [`wait_healthy`](Self::wait_healthy) waits for it.
    pub fn spawn_at(
        name: &str,
        mut command: Command,
        base_url: impl Into<String>,
    ) -> anyhow::Result<ChildProcess> {
        let child = command
            .spawn()
            .with_context(|| format!("starting the {name} ({command:?})"))?;
        Ok(ChildProcess {
            name: name.to_owned(),
            child,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
        })
    }

    /// Waits until `GET {base_url}{path}` answers 2xx; fails at once if the child exits, or
    /// after [`START_TIMEOUT`].
    pub async fn wait_healthy(&mut self, path: &str) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let started = Instant::now();
        let url = format!("{}{path}", self.base_url);
        loop {
            if let Ok(answer) = client.get(&url).send().await
                && answer.status().is_success()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("the {} exited ({status}) before it was healthy", self.name);
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "the {} did not answer {url} within {START_TIMEOUT:?}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time and peak RSS so far.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        Usage::of(self.pid()).with_context(|| format!("reading the {}'s usage", self.name))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Both fail harmlessly when a test already killed and reaped the child.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago (the kernel's choice for port 0). Another
/// process may take it before the child binds it; the tests accept that small race to get a
/// fixed address. Panics if no port can be bound: for tests.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A process's CPU time (user + system, all threads) and peak resident set so far, from
/// `/proc/PID/stat` and `/proc/PID/status` (Linux only).
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu: Duration,
    pub peak_rss_bytes: u64,
}

impl Usage {
    pub fn of(pid: u32) -> anyhow::Result<Usage> {
        Usage::read(&format!("/proc/{pid}"))
    }

    /// The calling process's own (the benchmark's load generator and receiver).
    pub fn of_self() -> anyhow::Result<Usage> {
        Usage::read("/proc/self")
    }

    fn read(dir: &str) -> anyhow::Result<Usage> {
        let stat = std::fs::read_to_string(format!("{dir}/stat"))
            .with_context(|| format!("reading {dir}/stat"))?;
        // The command name (field 2) may hold spaces; the fields after it are plain numbers.
        let after_name = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .context("unexpected /proc/PID/stat format")?;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
        let ticks = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .context("unexpected /proc/PID/stat format")
        };
        let cpu_ticks = ticks(11)? + ticks(12)?;
        let status = std::fs::read_to_string(format!("{dir}/status"))
            .with_context(|| format!("reading {dir}/status"))?;
        let peak_kb = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0);
        Ok(Usage {
            cpu: Duration::from_secs_f64(cpu_ticks as f64 / clock_ticks_per_second()),
            peak_rss_bytes: peak_kb * 1024,
        })
    }
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn the_announced_address_is_read_and_the_child_is_reaped_on_drop() {
        let child = ChildProcess::spawn_announced(
            "test child",
            sh("echo 'starting'; echo 'listening on http://127.0.0.1:1234/ now'; sleep 30"),
            "listening on ",
        )
        .unwrap();
        assert_eq!(child.base_url, "http://127.0.0.1:1234");
        let pid = child.pid();
        assert!(child.usage().is_ok());
        drop(child);
        assert!(Usage::of(pid).is_err(), "the child was killed and reaped");
    }

    #[test]
    fn a_child_that_exits_without_its_address_is_an_error() {
        let error = ChildProcess::spawn_announced("quiet child", sh("exit 3"), "listening on ")
            .err()
            .expect("an error");
        assert!(
            error.to_string().contains("the quiet child did not print"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn waiting_for_health_stops_when_the_child_exits() {
        let port = free_port();
        let mut child = ChildProcess::spawn_at(
            "short child",
            sh("exit 0"),
            format!("http://127.0.0.1:{port}/"),
        )
        .unwrap();
        assert_eq!(child.base_url, format!("http://127.0.0.1:{port}"));
        let error = child.wait_healthy("/readyz").await.unwrap_err();
        assert!(error.to_string().contains("exited"), "{error}");
    }

    #[test]
    fn own_usage_is_read_from_proc() {
        let usage = Usage::of_self().unwrap();
        assert!(usage.peak_rss_bytes > 0);
    }
}
