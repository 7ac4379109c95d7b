//! `nano-banana-bench`: measures what the server adds in front of a slow image model (issue #7).
//! Starts the fake Gemini upstream and `nano-banana serve` as child processes, drives load at
//! both, and prints a Markdown table. See BENCHMARKS.md; the work is in `nano_banana::bench`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nano_banana::bench::{self, RunArgs, servers::ServeFileArgs};

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
        return match bench::servers::serve_file(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match bench::run(cli.run).await {
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
