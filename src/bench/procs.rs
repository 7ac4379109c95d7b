//! The processes a benchmark drives: the `nano-banana serve` server, the `nano-banana fake-gemini`
//! upstream and the plain static file server, each a child process so that its peak RSS and CPU
//! time can be read from `/proc/<pid>` and so that no two of them share a file-descriptor limit.
//! Also the work folder they write into. What does not live here: load (`load.rs`).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// The first token of the benchmark server's empty database.
pub const TOKEN: &str = "nb-bench-token-0123456789abcdef";

/// How long a child gets to print its address and answer its health check.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process, killed (and reaped) when dropped so that a failed run leaves nothing behind.
pub struct ChildProcess {
    name: &'static str,
    child: Child,
    /// `http://127.0.0.1:PORT`, as the child printed it.
    pub base_url: String,
}

impl ChildProcess {
    /// Starts `command` with stdout piped (stderr goes to `log`) and waits for a stdout line
    /// containing `marker`, followed by the child's base URL.
    fn spawn(
        name: &'static str,
        mut command: Command,
        marker: &'static str,
        log: &Path,
    ) -> anyhow::Result<ChildProcess> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("creating the log file {}", log.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting the {name} ({command:?})"))?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let (found, address) = mpsc::channel();
        // Reads the address, then keeps draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split_once(marker).map(|(_, rest)| rest)
                    && let Some(sender) = found.take()
                {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = sender.send(url.trim_end_matches('/').to_owned());
                }
            }
        });
        let mut process = ChildProcess {
            name,
            child,
            base_url: String::new(),
        };
        match address.recv_timeout(START_TIMEOUT) {
            Ok(url) if url.starts_with("http://") => process.base_url = url,
            _ => bail!(
                "the {name} did not print its address within {START_TIMEOUT:?} (exit status: \
                 {:?}); see {}",
                process.child.try_wait().ok().flatten(),
                log.display()
            ),
        }
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time and peak RSS so far.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        Usage::of(self.pid()).with_context(|| format!("reading the {}'s usage", self.name))
    }

    /// Waits until `GET {base_url}{path}` answers 2xx.
    pub async fn wait_healthy(
        &mut self,
        client: &reqwest::Client,
        path: &str,
    ) -> anyhow::Result<()> {
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
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which binaries to run.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `nano-banana` (serve, fake-gemini).
    pub server: PathBuf,
    /// This benchmark binary (its hidden `serve-file` command).
    pub bench: PathBuf,
}

impl Binaries {
    /// `nano-banana` next to the running benchmark binary, unless given.
    pub fn locate(server: Option<PathBuf>) -> anyhow::Result<Binaries> {
        let bench = std::env::current_exe().context("locating the benchmark binary")?;
        let server = match server {
            Some(path) => path,
            None => bench
                .parent()
                .context("the benchmark binary has no folder")?
                .join(format!("nano-banana{}", std::env::consts::EXE_SUFFIX)),
        };
        if !server.is_file() {
            bail!(
                "{} not found: build it first (`cargo build --release`) or pass --server-bin",
                server.display()
            );
        }
        Ok(Binaries { server, bench })
    }
}

/// What the fake upstream is told.
#[derive(Debug, Clone)]
pub struct FakeSpec {
    /// As `nano-banana fake-gemini --latency` takes it: `none`, `10s`, `lognormal:6s,12s`, …
    pub latency: String,
    pub image_bytes: usize,
}

pub fn start_fake(
    bins: &Binaries,
    spec: &FakeSpec,
    work: &WorkDir,
    label: &str,
) -> anyhow::Result<ChildProcess> {
    let mut command = Command::new(&bins.server);
    command
        .env_clear()
        .args(["fake-gemini", "--listen", "127.0.0.1:0", "--latency"])
        .arg(&spec.latency)
        .arg("--image-bytes")
        .arg(spec.image_bytes.to_string())
        .env("RUST_LOG", "warn");
    ChildProcess::spawn(
        "fake Gemini upstream",
        command,
        "fake Gemini upstream on ",
        &work.path().join(format!("{label}-fake.log")),
    )
}

/// What the server is told beyond the defaults.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub workers: usize,
    /// Upstream calls over cleartext HTTP/2 (`--upstream-h2c`), as with Google over TLS.
    pub upstream_h2c: bool,
}

impl ServerSpec {
    /// The given workers; HTTP/1.1 to the fake.
    pub fn workers(workers: usize) -> ServerSpec {
        ServerSpec {
            workers,
            upstream_h2c: false,
        }
    }
}

pub fn start_server(
    bins: &Binaries,
    spec: &ServerSpec,
    fake: &ChildProcess,
    work: &WorkDir,
    label: &str,
) -> anyhow::Result<ChildProcess> {
    let data_dir = work.path().join(format!("{label}-data"));
    let mut command = Command::new(&bins.server);
    command
        .env_clear()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .args(["--workers", &spec.workers.to_string()])
        // S5 sends four 2 MB images as data: URIs (≈ 11 MB of JSON).
        .args(["--max-body-bytes", &(128usize << 20).to_string()])
        .args(["--gemini-base-url", &fake.base_url])
        .args([
            "--upstream-h2c",
            if spec.upstream_h2c { "true" } else { "false" },
        ])
        // The callback receiver listens on loopback.
        .args(["--fetch-allow", "127.0.0.1/32"])
        .env("GEMINI_API_KEY", "fake")
        .env("NANO_BANANA_BOOTSTRAP_TOKEN", TOKEN);
    // The rest of the configuration comes from the benchmark's environment, so the same tool
    // measures other setups: `NANO_BANANA_DATABASE_URL=postgres://…`, `NANO_BANANA_STORAGE=s3://…`,
    // `NANO_BANANA_REDIS_URL`, the allocator's `MALLOC_ARENA_MAX`, or another allocator through
    // `LD_PRELOAD`. (Flags above win.)
    for (name, value) in std::env::vars_os() {
        let passed = name.to_str().is_some_and(|name| {
            (name.starts_with("NANO_BANANA_")
                || name.starts_with("MALLOC_")
                || name == "LD_PRELOAD")
                && name != "NANO_BANANA_BOOTSTRAP_TOKEN"
        });
        if passed {
            command.env(name, value);
        }
    }
    ChildProcess::spawn(
        "server",
        command,
        "nano-banana is listening on ",
        &work.path().join(format!("{label}-server.log")),
    )
}

/// The comparison server of S6: `nano-banana-bench serve-file`.
pub fn start_static(
    bins: &Binaries,
    file: &Path,
    work: &WorkDir,
    label: &str,
) -> anyhow::Result<ChildProcess> {
    let mut command = Command::new(&bins.bench);
    command
        .env_clear()
        .args(["serve-file", "--listen", "127.0.0.1:0", "--file"])
        .arg(file);
    ChildProcess::spawn(
        "static file server",
        command,
        "serving on ",
        &work.path().join(format!("{label}-static.log")),
    )
}

/// A process's CPU time (user + system, all threads) and peak resident set so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu: Duration,
    pub peak_rss_bytes: u64,
}

impl Usage {
    pub fn of(pid: u32) -> anyhow::Result<Usage> {
        Usage::read(&format!("/proc/{pid}"))
    }

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

/// Raises the soft limit on open files to the hard limit (S3 holds 10,000 connections in the
/// load generator; the children inherit the raised limit). Returns the limit now in force.
pub fn raise_open_files_limit() -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("reading RLIMIT_NOFILE");
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error()).context("raising RLIMIT_NOFILE");
            }
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// A fresh folder for the children's data and logs, removed when dropped unless kept.
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    pub fn create(parent: Option<&Path>, keep: bool) -> anyhow::Result<WorkDir> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!(
            "nano-banana-bench-{}-{nanos:x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating the work folder {}", path.display()))?;
        Ok(WorkDir { path, keep })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the folder (its logs explain a failure).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
