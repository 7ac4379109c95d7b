//! `nano-banana-bench`: measures what the server adds in front of a slow image model (scenarios
//! S1–S6, their targets and the results: BENCHMARKS.md). Starts the fake Gemini upstream and the
//! server as child processes and reports requests/s, latency percentiles, errors, the server's
//! peak RSS and CPU time, each next to the same load sent to the fake upstream directly (or, for
//! stored images, to a plain static file server) in the same run.
//!
//! This file owns the command line and the run of the chosen scenarios. `procs` starts the
//! children with their flags and the run's work folder, `load` generates load, `scenarios` are
//! S1–S6, `report` the tables, `serve_file` the static file server of S6. Not here: the callback
//! receiver and the child-process launcher, shared with the integration tests in
//! `nano_banana_testkit` (crates/testkit). The server's code is not used: this binary does not
//! import the `nano_banana` library, and runs `nano-banana` as a user would.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};

mod load;
mod procs;
mod report;
mod scenarios;
mod serve_file;

use report::Report;
use serve_file::ServeFileArgs;

#[derive(Parser)]
#[command(
    name = "nano-banana-bench",
    version,
    about = "Benchmark nano-banana against its fake Gemini upstream (scenarios S1–S6)",
    long_about = "Starts the fake Gemini upstream and the server (`nano-banana`, found next to \
                  this binary) as child processes, sends the same load to the upstream directly \
                  and through the server, and prints requests/s, latency percentiles, errors, \
                  the server's peak RSS and CPU time as a Markdown table.\n\n\
                  Run it from a release build:\n  \
                  cargo build --release --bins && target/release/nano-banana-bench",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve one file at every path (S6's comparison server; started by the benchmark itself)
    #[command(hide = true)]
    ServeFile(ServeFileArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::ServeFile(args)) = cli.command {
        return match serve_file::serve_file(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli.run).await {
        Ok(report) => {
            println!("{}", report.render());
            if report.errors() > 0 {
                eprintln!("error: {} requests failed", report.errors());
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Which scenarios to run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// S1 to S6
    All,
    /// Small (20 KB) images, instant upstream, sync generate, concurrency 1 and 64 (64 also via /v1)
    S1,
    /// 2 MB images, instant upstream, concurrency 8
    S2,
    /// 10,000 concurrent sync requests waiting on a 10 s upstream
    S3,
    /// Async requests with callbacks: accepted, completed and delivered per second
    S4,
    /// Edits with four 2 MB data: URI inputs
    S5,
    /// GET of a stored 1 MB image, next to a plain static file server
    S6,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Scenarios to run, in order
    #[arg(value_enum, default_values_t = [Scenario::All])]
    pub scenarios: Vec<Scenario>,

    /// Tiny load and small images: checks that every scenario works, in seconds
    #[arg(long)]
    pub quick: bool,

    /// How long each timed phase of S1, S2, S5 and S6 sends requests, in seconds
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub duration: f64,

    /// Untimed load before each timed phase, in seconds
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub warmup: f64,

    /// Concurrent sync requests of S3
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub s3_requests: usize,

    /// Tasks submitted in S4
    #[arg(long, default_value_t = 4_000, value_name = "N")]
    pub s4_tasks: usize,

    /// The `nano-banana` binary [default: next to this one]
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,

    /// Folder for the run's databases, images and child logs [default: the system temp folder]
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,

    /// Keep the run's folder (logs, databases) instead of deleting it
    #[arg(long)]
    pub keep: bool,
}

/// The sizes and durations of one run.
#[derive(Debug, Clone)]
struct Scale {
    quick: bool,
    duration: Duration,
    warmup: Duration,
    /// Requests per timed phase in quick runs (instead of a duration).
    quick_requests: usize,
    small_image: usize,
    s2_image: usize,
    s3_requests: usize,
    s3_latency: &'static str,
    s4_tasks: usize,
    s5_input: usize,
    s6_image: usize,
}

impl Scale {
    fn from_args(args: &RunArgs) -> anyhow::Result<Scale> {
        let seconds = |s: f64, flag: &str| {
            Duration::try_from_secs_f64(s).with_context(|| format!("{flag} must be ≥ 0"))
        };
        let full = Scale {
            quick: false,
            duration: seconds(args.duration, "--duration")?,
            warmup: seconds(args.warmup, "--warmup")?,
            quick_requests: 0,
            small_image: 20_000,
            s2_image: 2_000_000,
            s3_requests: args.s3_requests.max(1),
            s3_latency: "10s",
            s4_tasks: args.s4_tasks.max(1),
            s5_input: 2_000_000,
            s6_image: 1_000_000,
        };
        if !args.quick {
            return Ok(full);
        }
        Ok(Scale {
            quick: true,
            duration: Duration::ZERO,
            warmup: Duration::ZERO,
            quick_requests: 6,
            small_image: 20_000,
            s2_image: 200_000,
            s3_requests: 40,
            s3_latency: "300ms",
            s4_tasks: 20,
            s5_input: 50_000,
            s6_image: 100_000,
        })
    }
}

/// Runs the chosen scenarios and returns what they measured. A scenario that cannot run at all
/// (a child that does not start) is an error; requests that fail are counted in the report.
async fn run(args: RunArgs) -> anyhow::Result<Report> {
    let scale = Scale::from_args(&args)?;
    let bins = procs::Binaries::locate(args.server_bin.clone())?;
    let open_files = procs::raise_open_files_limit()?;
    let mut work = procs::WorkDir::create(args.work_dir.as_deref(), args.keep)?;
    let mut chosen: Vec<Scenario> = if args.scenarios.contains(&Scenario::All) {
        vec![
            Scenario::S1,
            Scenario::S2,
            Scenario::S3,
            Scenario::S4,
            Scenario::S5,
            Scenario::S6,
        ]
    } else {
        args.scenarios.clone()
    };
    chosen.dedup();
    let mut bench = scenarios::Bench {
        bins,
        scale,
        open_files,
        report: Report {
            quick: args.quick,
            ..Report::default()
        },
    };
    for scenario in chosen {
        eprintln!("running {scenario:?}…");
        let result = match scenario {
            Scenario::All => Ok(()),
            Scenario::S1 => bench.s1(&work).await,
            Scenario::S2 => bench.s2(&work).await,
            Scenario::S3 => bench.s3(&work).await,
            Scenario::S4 => bench.s4(&work).await,
            Scenario::S5 => bench.s5(&work).await,
            Scenario::S6 => bench.s6(&work).await,
        };
        if let Err(e) = result {
            work.keep();
            eprintln!("{}", bench.report.render());
            return Err(e).with_context(|| {
                format!(
                    "scenario {scenario:?} failed (logs kept in {})",
                    work.path().display()
                )
            });
        }
    }
    if bench.report.errors() > 0 {
        work.keep();
        bench.report.notes.push(format!(
            "some requests failed: the children's logs are kept in {}",
            work.path().display()
        ));
    }
    Ok(bench.report)
}
