//! The `nano-banana` command: the server (`serve`) and the client commands.

use clap::{Parser, Subcommand};
use nano_banana::{
    app::Application,
    config::{Config, ServeArgs},
    telemetry,
};

#[derive(Parser)]
#[command(
    name = "nano-banana",
    version,
    about = "A self-hosted server for the Nano Banana Images API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SQLite and a local folder under ./data by default)
    Serve(ServeArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init();
    let config = Config::resolve(args)?;
    let app = Application::build(config).await?;
    println!("nano-banana is listening on {}", app.base_url());
    app.run_until_stopped(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
