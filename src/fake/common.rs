//! What the fakes share. All of them (`gemini`, `openai`, `chat`): counting and recording
//! requests and the queue of scripted outcomes ([`Calls`]), and serving an axum router on
//! loopback until dropped ([`Server`]; the Gemini fake on a listener of its own, which counts
//! connections and may bind a given address). The OpenAI-shaped ones (`openai`, `chat`) also:
//! PNGs of a requested size in one colour (encoded once per size), `[fake:…]` prompt tags,
//! durations and hanging until shutdown; the Gemini fake keeps its own of those. Imports nothing
//! of the crate outside `fake`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use image::ImageEncoder as _;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;

/// Edits carry up to 16 inputs of up to 50 MB at OpenAI; Google accepts 100 MB of inline data;
/// the bench sends 8 MB images to the Gemini fake (≈ 11 MB of base64 each, several per request).
const MAX_REQUEST_BYTES: usize = 256 << 20;
/// The largest side the fakes draw; a bigger request gets an error, not a huge allocation.
pub const MAX_SIDE: u32 = 8192;

/// A router served on `127.0.0.1:0` in a tokio task. Dropping it stops accepting connections
/// and wakes requests that hang ([`Server::stopped`]).
pub(super) struct Server {
    pub(super) addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl Server {
    pub(super) async fn start(
        router: Router,
        name: &'static str,
        shutdown: watch::Sender<bool>,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let addr = listener.local_addr()?;
        Ok(Server::serve(listener, addr, router, name, shutdown))
    }

    /// Serves `router` on `listener` (bound at `addr`; a listener of the fake's own, such as
    /// one that counts connections) until `shutdown` says so or the server is dropped.
    pub(super) fn serve<L>(
        listener: L,
        addr: SocketAddr,
        router: Router,
        name: &'static str,
        shutdown: watch::Sender<bool>,
    ) -> Server
    where
        L: axum::serve::Listener,
        L::Addr: std::fmt::Debug,
    {
        let app = router.layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES));
        let mut stop = shutdown.subscribe();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            });
            if let Err(err) = serve.await {
                tracing::warn!("fake {name} stopped: {err}");
            }
        });
        Server {
            addr,
            shutdown,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub(super) fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        // Frees the port at once; connection tasks still see the signal and close.
        self.server.abort();
    }
}

/// Waits until the fake shuts down.
pub(super) async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopped| *stopped).await;
}

/// What a fake keeps of the requests it receives and what it has been told to answer them with:
/// every request counted, the latest ones recorded (`R`, each fake's own record), and the
/// outcomes (`S`, each fake's own scenarios) queued for coming requests, taken first in, first
/// out.
pub(super) struct Calls<R, S> {
    /// How many recorded requests are kept; 0 records none.
    limit: usize,
    count: AtomicUsize,
    recorded: Mutex<VecDeque<R>>,
    scenarios: Mutex<VecDeque<S>>,
}

impl<R: Clone, S> Calls<R, S> {
    pub(super) fn new(limit: usize) -> Calls<R, S> {
        Calls {
            limit,
            count: AtomicUsize::new(0),
            recorded: Mutex::new(VecDeque::new()),
            scenarios: Mutex::new(VecDeque::new()),
        }
    }

    /// Counts a request, whatever its path or outcome.
    pub(super) fn received(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether [`Calls::record`] keeps anything (a fake can skip building its record if not).
    pub(super) fn records(&self) -> bool {
        self.limit > 0
    }

    /// Keeps `request`, dropping the oldest beyond the limit.
    pub(super) fn record(&self, request: R) {
        if !self.records() {
            return;
        }
        let mut recorded = lock(&self.recorded);
        while recorded.len() >= self.limit {
            recorded.pop_front();
        }
        recorded.push_back(request);
    }

    /// The recorded requests, oldest first.
    pub(super) fn requests(&self) -> Vec<R> {
        lock(&self.recorded).iter().cloned().collect()
    }

    pub(super) fn push_scenario(&self, scenario: S) {
        lock(&self.scenarios).push_back(scenario);
    }

    /// The next queued outcome, if any.
    pub(super) fn next_scenario(&self) -> Option<S> {
        lock(&self.scenarios).pop_front()
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind, still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A PNG and its base64.
pub(super) struct EncodedPng {
    pub(super) bytes: Bytes,
    pub(super) base64: String,
}

/// A PNG being made or made, shared by the requests that want its size.
type PngCell = Arc<OnceCell<Arc<EncodedPng>>>;

/// One encoded PNG per pixel size, made once on a blocking thread.
pub(super) struct PngCache {
    rgb: [u8; 3],
    cells: Mutex<HashMap<(u32, u32), PngCell>>,
}

impl PngCache {
    pub(super) fn new(rgb: [u8; 3]) -> PngCache {
        PngCache {
            rgb,
            cells: Mutex::new(HashMap::new()),
        }
    }

    pub(super) async fn get(&self, width: u32, height: u32) -> Result<Arc<EncodedPng>, String> {
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(format!("fake: will not draw {width}x{height}"));
        }
        let cell = lock(&self.cells)
            .entry((width, height))
            .or_default()
            .clone();
        let rgb = self.rgb;
        let png = cell
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || encode_png(width, height, rgb))
                    .await
                    .map_err(|err| format!("fake: image encoder failed: {err}"))?
                    .map(Arc::new)
            })
            .await?;
        Ok(png.clone())
    }
}

fn encode_png(width: u32, height: u32, rgb: [u8; 3]) -> Result<EncodedPng, String> {
    let image = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
    let mut png = Vec::new();
    // The Up filter turns every row after the first into zeros, which the fast compressor
    // shrinks to almost nothing: a 4K PNG is a few tens of KiB.
    PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::Up)
        .write_image(
            image.as_raw(),
            width,
            height,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|err| format!("fake: PNG encoding failed: {err}"))?;
    Ok(EncodedPng {
        base64: BASE64.encode(&png),
        bytes: Bytes::from(png),
    })
}

/// The insides of every `[fake:…]` tag in a prompt, in order.
pub(super) fn tags(prompt: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find("[fake:") {
        let after = &rest[start + "[fake:".len()..];
        let Some(end) = after.find(']') else { break };
        found.push(after[..end].trim());
        rest = &after[end..];
    }
    found
}

/// `250ms`, `1.5s`, `2m`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" => 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(value * scale).ok()
}

/// `WIDTHxHEIGHT`.
pub(super) fn parse_size(size: &str) -> Option<(u32, u32)> {
    let (w, h) = size.split_once('x')?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

/// Seconds for a `Retry-After` header: whole seconds when whole, else with milliseconds (OpenAI's
/// SDK and our provider read fractions; tests want short waits).
pub(super) fn retry_after_seconds(delay: Duration) -> String {
    if delay.subsec_millis() == 0 {
        delay.as_secs().to_string()
    } else {
        format!("{:.3}", delay.as_secs_f64())
    }
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_sizes_and_durations_parse() {
        assert_eq!(
            tags("a [fake:429=2s] b [fake: hang ]"),
            vec!["429=2s", "hang"]
        );
        assert!(tags("no tags [fake:open").is_empty());
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_size("1536x1024"), Some((1536, 1024)));
        assert_eq!(parse_size("auto"), None);
        assert_eq!(retry_after_seconds(Duration::from_secs(30)), "30");
        assert_eq!(retry_after_seconds(Duration::from_millis(250)), "0.250");
    }

    #[tokio::test]
    async fn pngs_have_the_asked_size_and_are_cached() {
        let cache = PngCache::new([1, 2, 3]);
        let png = cache.get(48, 32).await.unwrap();
        let image = image::load_from_memory(&png.bytes).unwrap();
        assert_eq!((image.width(), image.height()), (48, 32));
        assert_eq!(image.to_rgb8().get_pixel(5, 5).0, [1, 2, 3]);
        assert!(Arc::ptr_eq(&png, &cache.get(48, 32).await.unwrap()));
        assert!(cache.get(0, 10).await.is_err());
        assert!(cache.get(MAX_SIDE + 1, 10).await.is_err());
    }
}
