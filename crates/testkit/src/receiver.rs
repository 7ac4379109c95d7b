//! The callback receiver: an HTTP server on 127.0.0.1 (a random port) standing in for a client's
//! `callback_url`, run inside the test or benchmark process. It records what arrives and answers
//! as told ([`Behaviour`]): 200, 500 for the first N, or never.
//!
//! Two users, one receiver. The integration tests read every post back (headers, parsed JSON,
//! exact bytes, to check bodies and verify signatures) and make the server retry; the benchmark
//! (S4) receives thousands and only needs, per task, when its first callback arrived, so it asks
//! for the tally alone and the receiver keeps no copies. Both get the tally.
//!
//! What it does not do: check what arrived (the tests assert, the benchmark counts failures), or
//! verify signatures (the tests use an independent implementation for that).

use std::{
    collections::{HashMap, hash_map::Entry},
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde_json::Value;
use tokio::net::TcpListener;

/// How the receiver answers, and what it keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// Answer 500 to the first this many requests (whatever they carry), 200 after: the server
    /// must retry until a 2xx.
    pub fail_first: usize,
    /// Never answer (each request is recorded first): a receiver that holds its connections.
    pub hang: bool,
    /// Keep only the [`Deliveries`] tally, not every post: for the benchmark, whose thousands of
    /// callbacks would otherwise be copied and kept in the process it measures.
    pub tally_only: bool,
}

/// Callbacks counted by task, in arrival order. Delivery is at least once, so a task may be
/// called back more than once; its first arrival is what counts.
#[derive(Debug, Default, Clone)]
pub struct Deliveries {
    /// First arrival per `task_id` (`""` for a body without one).
    pub first: HashMap<String, Instant>,
    /// Deliveries of a task already seen (at-least-once allows them; they are counted apart).
    pub repeats: usize,
    /// Bodies that were not a successful task result (`"success": true` and a `task_id`).
    pub failures: usize,
}

impl Deliveries {
    fn count(&mut self, body: &Value, arrived: Instant) {
        let task_id = body["task_id"].as_str().unwrap_or_default().to_owned();
        if body["success"] != true || task_id.is_empty() {
            self.failures += 1;
        }
        match self.first.entry(task_id) {
            Entry::Occupied(_) => self.repeats += 1,
            Entry::Vacant(slot) => {
                slot.insert(arrived);
            }
        }
    }
}

#[derive(Default)]
struct Record {
    /// Requests seen, to know which ones `fail_first` fails.
    calls: usize,
    /// Every post's headers and JSON body (`Null` when it is not JSON), unless `tally_only`.
    posts: Vec<(HeaderMap, Value)>,
    /// Every post's exact bytes, in the same order: signatures are over these, not the JSON.
    raw: Vec<Bytes>,
    deliveries: Deliveries,
}

struct Shared {
    behaviour: Behaviour,
    record: Mutex<Record>,
}

impl Shared {
    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        // A panicking test thread must not hide what arrived from the assertions that follow.
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Receives callbacks at any path (its [`url`](Self::url) says `/callback`) and any method;
/// stops listening when dropped.
pub struct CallbackReceiver {
    port: u16,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl CallbackReceiver {
    /// Binds a random port on 127.0.0.1 and serves on the current tokio runtime.
    pub async fn start(behaviour: Behaviour) -> std::io::Result<CallbackReceiver> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            behaviour,
            record: Mutex::default(),
        });
        let app = Router::new().fallback(receive).with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("callback receiver stopped: {e}");
            }
        });
        Ok(CallbackReceiver {
            port,
            shared,
            server,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL to give as `callback_url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.port)
    }

    /// Every post so far, in arrival order: headers and JSON body. Empty with `tally_only`.
    pub fn received(&self) -> Vec<(HeaderMap, Value)> {
        self.shared.record().posts.clone()
    }

    /// The exact bytes of each post, in arrival order. Empty with `tally_only`.
    pub fn raw_bodies(&self) -> Vec<Bytes> {
        self.shared.record().raw.clone()
    }

    /// The tally so far.
    pub fn deliveries(&self) -> Deliveries {
        self.shared.record().deliveries.clone()
    }

    /// Tasks called back at least once so far.
    pub fn delivered(&self) -> usize {
        self.shared.record().deliveries.first.len()
    }

    /// Waits until `n` posts arrived (30 s at most) and returns them all. For tests: panics when
    /// they do not arrive in time, and never returns with `tally_only`.
    pub async fn wait_for(&self, n: usize) -> Vec<(HeaderMap, Value)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} callbacks arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for CallbackReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    // Before parsing: the benchmark's delivery rate is measured from these instants.
    let arrived = Instant::now();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let behaviour = shared.behaviour;
    let call = {
        let mut record = shared.record();
        let call = record.calls;
        record.calls += 1;
        record.deliveries.count(&json, arrived);
        if !behaviour.tally_only {
            record.posts.push((headers, json));
            record.raw.push(body);
        }
        call
    };
    if behaviour.hang {
        std::future::pending::<()>().await;
    }
    if call < behaviour.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(receiver: &CallbackReceiver, body: &str) -> Result<u16, reqwest::Error> {
        let answer = reqwest::Client::new()
            .post(receiver.url())
            .header("content-type", "application/json")
            .header("webhook-id", "msg_1")
            .body(body.to_owned())
            .timeout(Duration::from_millis(300))
            .send()
            .await?;
        Ok(answer.status().as_u16())
    }

    #[tokio::test]
    async fn the_first_posts_fail_and_every_one_is_kept_with_its_bytes() {
        let receiver = CallbackReceiver::start(Behaviour {
            fail_first: 2,
            ..Behaviour::default()
        })
        .await
        .unwrap();
        let body = r#"{"success": true, "task_id": "t1"}"#;
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(post(&receiver, body).await.unwrap());
        }
        assert_eq!(statuses, [500, 500, 200]);
        let posts = receiver.wait_for(3).await;
        assert_eq!(posts[0].0["webhook-id"], "msg_1");
        assert_eq!(posts[2].1["task_id"], "t1");
        assert_eq!(receiver.raw_bodies(), vec![Bytes::from(body); 3]);
        let deliveries = receiver.deliveries();
        assert_eq!((deliveries.first.len(), deliveries.repeats), (1, 2));
        assert_eq!(deliveries.failures, 0);
    }

    #[tokio::test]
    async fn the_tally_counts_repeats_and_failures_without_keeping_posts() {
        let receiver = CallbackReceiver::start(Behaviour {
            tally_only: true,
            ..Behaviour::default()
        })
        .await
        .unwrap();
        for body in [
            r#"{"success": true, "task_id": "a"}"#,
            r#"{"success": true, "task_id": "a"}"#,
            r#"{"success": false, "task_id": "b"}"#,
            "not json",
        ] {
            assert_eq!(post(&receiver, body).await.unwrap(), 200);
        }
        assert!(receiver.received().is_empty() && receiver.raw_bodies().is_empty());
        let deliveries = receiver.deliveries();
        assert_eq!(
            receiver.delivered(),
            3,
            "a, b and the body without a task id"
        );
        assert_eq!((deliveries.repeats, deliveries.failures), (1, 2));
    }

    #[tokio::test]
    async fn a_hanging_receiver_records_and_never_answers() {
        let receiver = CallbackReceiver::start(Behaviour {
            hang: true,
            ..Behaviour::default()
        })
        .await
        .unwrap();
        let answer = post(&receiver, "{}").await;
        assert!(answer.is_err_and(|e| e.is_timeout()));
        assert_eq!(receiver.received().len(), 1);
    }
}
