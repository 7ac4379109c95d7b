//! The processes a benchmark run drives, with the flags and environment the benchmark gives them:
//! the `nano-banana serve` server, the `nano-banana fake-gemini` upstream and the static file
//! server, each a child process so that its peak RSS and CPU time can be read from `/proc/<pid>`
//! and so that no two of them share a file-descriptor limit. Also the run's work folder (their
//! databases and logs) and its open-files limit. Not here: starting a child, waiting for its
//! address and reading its usage (`nano_banana_testkit::process`, shared with the tests), and
//! load (`load.rs`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, anyhow, bail};
use nano_banana_testkit::ChildProcess;

/// The first token of the benchmark server's empty database.
pub const TOKEN: &str = "nb-bench-token-0123456789abcdef";

/// Starts `command` with no stdin and stderr into `log`, and waits for the stdout line
/// `marker` followed by its address (each child is told to listen on port 0).
fn spawn(
    name: &str,
    mut command: Command,
    marker: &str,
    log: &Path,
) -> anyhow::Result<ChildProcess> {
    let log_file = std::fs::File::create(log)
        .with_context(|| format!("creating the log file {}", log.display()))?;
    command.stdin(Stdio::null()).stderr(log_file);
    // The log says why a child did not start; the launcher does not know where it is.
    ChildProcess::spawn_announced(name, command, marker)
        .map_err(|e| anyhow!("{e:#}; see {}", log.display()))
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
    spawn(
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
    spawn(
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
    spawn(
        "static file server",
        command,
        "serving on ",
        &work.path().join(format!("{label}-static.log")),
    )
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
