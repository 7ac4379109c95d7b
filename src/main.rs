//! The `nano-banana` command: the server (`serve`), the client commands (`generate`, `edit`,
//! `task`) and a fake Gemini upstream for trying things out offline (`fake-gemini`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nano_banana::{
    app::Application,
    client,
    config::{Config, ServeArgs},
    telemetry,
};

#[derive(Parser)]
#[command(
    name = "nano-banana",
    version,
    about = "A self-hosted server for the Nano Banana Images API, and a client for it",
    long_about = "A self-hosted server for the Nano Banana Images API (image generation and \
                  editing with Google's Gemini image models), and a command-line client that \
                  talks to any server speaking the same contract.\n\n\
                  Server settings come from flags, then NANO_BANANA_* environment variables, \
                  then an optional TOML file (--config), then built-in defaults."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SQLite and a local folder under ./data by default)
    Serve(Box<ServeArgs>),
    /// Generate images from a prompt
    Generate(client::GenerateArgs),
    /// Edit images (local files or URLs) following a prompt
    Edit(client::EditArgs),
    /// Show a task, or wait for it to finish and save its images
    Task(client::TaskArgs),
    /// Administer applications, tokens, credits, limits and usage
    Admin(client::admin::AdminArgs),
    /// Run a fake Gemini upstream on loopback (for trying the server without a key)
    FakeGemini(FakeGeminiArgs),
}

#[derive(clap::Args)]
struct FakeGeminiArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    /// Delay before each answer: `none`, `250ms` (fixed), `1s..3s` (uniform) or
    /// `lognormal:6s,12s` (median, 95th percentile)
    #[arg(long, default_value = "none", value_name = "LATENCY")]
    latency: nano_banana::fake::gemini::Latency,
    /// Approximate size of each returned PNG, in bytes (0: a small solid-colour PNG)
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    image_bytes: usize,
}

/// Threads for blocking work: short file I/O (image writes and reads) and DNS lookups. Tokio's
/// default of 512 let a burst of 10,000 finishing tasks start 512 threads, ~160 MB of memory
/// (BENCHMARKS.md, S3), where a few dozen keep two cores just as busy.
const MAX_BLOCKING_THREADS: usize = 128;

/// glibc's malloc gives each buffer over its mmap threshold a fresh mapping and hands freed
/// memory at the top of an arena back to the kernel past its trim threshold; both adapt, but not
/// to a server whose every request holds a few megabytes (an upstream answer, a decoded image):
/// each such buffer was then zeroed and faulted in anew, ~13 % of the server's CPU with 2 MB
/// images. Fixed thresholds keep them in the arenas for reuse (BENCHMARKS.md, S2). An operator's
/// `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    const SETTINGS: [(&str, libc::c_int, libc::c_int); 2] = [
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 32 << 20),
        ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 64 << 20),
    ];
    for (variable, parameter, value) in SETTINGS {
        if std::env::var_os(variable).is_none() {
            // SAFETY: `mallopt` only sets allocator parameters (it takes the allocator's own
            // lock); a refused value (0 returned) leaves glibc's default in place.
            unsafe { libc::mallopt(parameter, value) };
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        tune_malloc();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Generate(args) => client::generate(args).await,
            Command::Edit(args) => client::edit(args).await,
            Command::Task(args) => client::task(args).await,
            Command::Admin(args) => client::admin::cli(args).await,
            Command::FakeGemini(args) => fake_gemini(args).await,
        }
    });
    // The command is done (the server has drained). Whatever background task is left — a
    // database pool's maintenance loop, which can spin once the runtime's timers are shut down —
    // gets a moment, never the power to keep the process from exiting (seen once in CI: an
    // `admin migrate-db` that had printed its error kept running at 100 % CPU).
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init();
    let config = Config::resolve(args)?;
    let app = Application::build(config).await?;
    if app.uses_placeholder() {
        tracing::warn!(
            "no upstream API key: images are offline PLACEHOLDERS (set GEMINI_API_KEY for real ones)"
        );
    }
    let base = app.base_url().to_owned();
    let token = match app.created_token() {
        Some(token) => {
            println!(
                "Created the first application and its token (shown only this once):\n\n    {token}\n"
            );
            token.to_owned()
        }
        None => "$NANO_BANANA_TOKEN".to_owned(),
    };
    println!("nano-banana is listening on {base}\n\nTry it:\n");
    println!(
        "curl -X POST '{base}/nano-banana/images' \\\n  -H 'authorization: Bearer {token}' \\\n  \
         -H 'content-type: application/json' \\\n  -d '{{\"action\": \"generate\", \"prompt\": \"a nano banana on a plate\"}}'\n"
    );
    app.run_until_stopped(shutdown_signal()).await
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

async fn fake_gemini(args: FakeGeminiArgs) -> anyhow::Result<()> {
    telemetry::init();
    let options = nano_banana::fake::gemini::FakeGeminiOptions {
        latency: args.latency,
        image_bytes: args.image_bytes,
        // Nothing reads the recorded requests of a standalone fake, and the benchmark sends it
        // bodies of tens of megabytes: keep none.
        record_bodies: false,
        record_limit: 0,
        ..Default::default()
    };
    let fake = nano_banana::fake::gemini::FakeGemini::start_on(args.listen, options).await?;
    println!(
        "fake Gemini upstream on {} (any API key); point the server at it with\n  \
         NANO_BANANA_GEMINI_BASE_URL={} GEMINI_API_KEY=fake nano-banana serve",
        fake.base_url(),
        fake.base_url()
    );
    shutdown_signal().await;
    Ok(())
}
