//! The small HTTP servers of the benchmark itself: the callback receiver of S4 (in the benchmark
//! process, counting deliveries) and the plain static file server S6 compares against (run as a
//! child process through the hidden `serve-file` command).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use anyhow::Context;
use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::net::TcpListener;

/// Receives callbacks at `POST /hook` and remembers when each task's first one arrived.
pub struct CallbackReceiver {
    pub url: String,
    seen: Arc<Mutex<Deliveries>>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default, Clone)]
pub struct Deliveries {
    /// First arrival per task id.
    pub first: HashMap<String, Instant>,
    /// Deliveries of a task already seen (at-least-once allows them; they are counted apart).
    pub repeats: usize,
    /// Bodies that were not a successful task result.
    pub failures: usize,
}

impl CallbackReceiver {
    pub async fn start() -> anyhow::Result<CallbackReceiver> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("binding the callback receiver")?;
        let addr = listener
            .local_addr()
            .context("reading the receiver's address")?;
        let seen = Arc::new(Mutex::new(Deliveries::default()));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(seen.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("callback receiver stopped: {e}");
            }
        });
        Ok(CallbackReceiver {
            url: format!("http://{addr}/hook"),
            seen,
            server,
        })
    }

    pub fn deliveries(&self) -> Deliveries {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn delivered(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .first
            .len()
    }
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(seen): State<Arc<Mutex<Deliveries>>>, body: Bytes) -> StatusCode {
    let now = Instant::now();
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let task_id = parsed["task_id"].as_str().unwrap_or_default().to_owned();
    let succeeded = parsed["success"] == true;
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    if !succeeded || task_id.is_empty() {
        seen.failures += 1;
    }
    match seen.first.entry(task_id) {
        std::collections::hash_map::Entry::Occupied(_) => seen.repeats += 1,
        std::collections::hash_map::Entry::Vacant(slot) => {
            slot.insert(now);
        }
    }
    StatusCode::OK
}

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
