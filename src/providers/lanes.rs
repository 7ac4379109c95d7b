//! Upstream connections for many slow calls at once. Over HTTP/2 (what Google's endpoints
//! negotiate), one `reqwest::Client` keeps one connection per host and multiplexes every call on
//! it; the server caps the streams in flight on a connection (`SETTINGS_MAX_CONCURRENT_STREAMS`,
//! commonly 100), and hyper queues the calls beyond that instead of opening another connection
//! (hyperium/hyper#2197). With a model that takes 10 s per image, one client would make at most
//! ~10 images per second, however many workers wait.
//!
//! A [`Lanes`] is a growing set of clients, each with its own connection: a call takes the first
//! lane with fewer than `per_lane` calls in flight and opens a new lane when all are full. Over
//! HTTP/1.1 (one call per connection) lanes change nothing but the grouping of the pools. A lane
//! holds whatever makes the calls: a `reqwest::Client`, or one HTTP/2 connection of our own
//! ([`super::direct`]).

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

/// How an upstream's HTTP connections are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Calls in flight on one connection before another is opened.
    pub streams_per_connection: usize,
    /// HTTP/2 without TLS and without negotiation (prior knowledge), for `http://` upstreams
    /// that speak it: a local proxy, the fake. `https://` upstreams negotiate HTTP/2 anyway.
    pub h2c: bool,
}

/// HTTP/2 servers commonly allow 100 concurrent streams (RFC 9113 recommends at least 100).
pub const DEFAULT_STREAMS_PER_CONNECTION: usize = 100;

impl Default for ConnectionSettings {
    fn default() -> ConnectionSettings {
        ConnectionSettings {
            streams_per_connection: DEFAULT_STREAMS_PER_CONNECTION,
            h2c: false,
        }
    }
}

pub struct Lanes<C> {
    per_lane: usize,
    build: Box<dyn Fn() -> Result<C, String> + Send + Sync>,
    lanes: Mutex<Vec<Arc<Lane<C>>>>,
}

impl<C> std::fmt::Debug for Lanes<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("per_lane", &self.per_lane)
            .field("lanes", &self.count())
            .finish()
    }
}

struct Lane<C> {
    client: C,
    in_flight: AtomicUsize,
}

/// A call's place in a lane, given back when dropped (after the whole answer has been read).
pub struct LaneGuard<C> {
    lane: Arc<Lane<C>>,
}

impl<C> LaneGuard<C> {
    pub fn client(&self) -> &C {
        &self.lane.client
    }
}

impl<C> Drop for LaneGuard<C> {
    fn drop(&mut self) {
        self.lane.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<C> Lanes<C> {
    /// `build` makes one lane's client; it is called once now (so a bad configuration fails at
    /// startup) and again for every new lane.
    pub fn new<E: std::fmt::Display>(
        per_lane: usize,
        build: impl Fn() -> Result<C, E> + Send + Sync + 'static,
    ) -> Result<Lanes<C>, E> {
        let first = Arc::new(Lane {
            client: build()?,
            in_flight: AtomicUsize::new(0),
        });
        Ok(Lanes {
            per_lane: per_lane.max(1),
            build: Box::new(move || build().map_err(|e| e.to_string())),
            lanes: Mutex::new(vec![first]),
        })
    }

    /// A lane for one call: the first with room, or a new one. If a new client cannot be built
    /// (it could be at startup, so this is not expected), the least busy lane takes the call.
    pub fn acquire(&self) -> LaneGuard<C> {
        if let Some(guard) = self.take_roomy(&self.lock()) {
            return guard;
        }
        // Every lane is full. The new client is built outside the lock, so calls that find
        // room elsewhere meanwhile do not wait for it.
        let built = (self.build)();
        let mut lanes = self.lock();
        // Another call may have opened a lane in the meantime: use it, drop ours.
        if let Some(guard) = self.take_roomy(&lanes) {
            return guard;
        }
        let lane = match built {
            Ok(client) => {
                let lane = Arc::new(Lane {
                    client,
                    in_flight: AtomicUsize::new(0),
                });
                lanes.push(lane.clone());
                tracing::debug!(lanes = lanes.len(), "opened another upstream lane");
                lane
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not open another upstream lane");
                lanes
                    .iter()
                    .min_by_key(|lane| lane.in_flight.load(Ordering::Acquire))
                    .cloned()
                    .unwrap_or_else(|| lanes[0].clone())
            }
        };
        take(lane)
    }

    /// The first lane with room, taken; called with the lock held so that two calls cannot
    /// both take a lane's last place.
    fn take_roomy(&self, lanes: &[Arc<Lane<C>>]) -> Option<LaneGuard<C>> {
        lanes
            .iter()
            .find(|lane| lane.in_flight.load(Ordering::Acquire) < self.per_lane)
            .cloned()
            .map(take)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Lane<C>>>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many lanes (clients, hence connections over HTTP/2) exist.
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

fn take<C>(lane: Arc<Lane<C>>) -> LaneGuard<C> {
    lane.in_flight.fetch_add(1, Ordering::AcqRel);
    LaneGuard { lane }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_takes_the_first_lane_with_room_and_full_lanes_open_new_ones() {
        let lanes = Lanes::new(2, || reqwest::Client::builder().build()).unwrap();
        let held: Vec<LaneGuard<reqwest::Client>> = (0..5).map(|_| lanes.acquire()).collect();
        assert_eq!(lanes.count(), 3, "5 calls at 2 per lane");
        let counts = |lanes: &Lanes<reqwest::Client>| -> Vec<usize> {
            let lanes = lanes.lanes.lock().unwrap();
            lanes
                .iter()
                .map(|l| l.in_flight.load(Ordering::Acquire))
                .collect()
        };
        assert_eq!(counts(&lanes), vec![2, 2, 1]);
        // A call finishing on the first lane makes room there: the next call goes back to it.
        let mut held = held;
        drop(held.remove(0));
        let again = lanes.acquire();
        assert!(Arc::ptr_eq(&again.lane, &held[0].lane));
        assert_eq!(lanes.count(), 3);
        drop(again);
        drop(held);
        assert_eq!(counts(&lanes), vec![0, 0, 0]);
    }

    #[test]
    fn at_least_one_call_per_lane() {
        let lanes = Lanes::new(0, || reqwest::Client::builder().build()).unwrap();
        let _a = lanes.acquire();
        let _b = lanes.acquire();
        assert_eq!(lanes.count(), 2);
    }
}
