//! The plain static file server S6 compares the server's `GET /images/{key}` against, run as a
//! child process through this binary's hidden `serve-file` command. Not here: the callback
//! receiver of S4 (`nano_banana_testkit::CallbackReceiver`, shared with the tests).

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use axum::{
    Router,
    body::Body,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

/// Arguments of the hidden `serve-file` command.
#[derive(clap::Args, Debug)]
pub struct ServeFileArgs {
    /// The file served at every path
    #[arg(long)]
    pub file: PathBuf,
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// A minimal static file server: every GET reads the file with `tokio::fs` and answers its bytes
/// as `image/png`. The same runtime, HTTP stack (axum + hyper) and file system as the server,
/// without its routing, middleware, tracing and object-store layers: the floor the server's
/// `GET /images/{key}` can be held to. Runs until killed.
pub async fn serve_file(args: ServeFileArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let app = Router::new()
        .route("/{*path}", get(read_file))
        .with_state(Arc::new(args.file));
    println!("serving on http://{addr}");
    axum::serve(listener, app).await.context("serving the file")
}

async fn read_file(State(file): State<Arc<PathBuf>>) -> Response {
    match tokio::fs::read(file.as_path()).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "image/png")], Body::from(bytes)).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
