//! Routing a public model to its upstreams. A model has one route or several, each a provider and
//! an upstream model id with a `priority` (1 is tried before 2) and a `weight`. A call goes to
//! a route of the best priority that is not cooling down, chosen at random by weight. A route
//! that fails with a retryable error (429, 5xx, a connection that never carried the request)
//! cools down — for as long as the upstream asked (`Retry-After`, `RetryInfo`), else a backoff
//! that grows with its consecutive failures — and the call moves to the next route at once. What
//! each route went through is kept for `GET /admin/routes`.
//!
//! Health is shared by every task of this process, so a route that answered 429 gets no call from
//! any of them until its cooldown ends. Nodes keep their own view.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use rand::Rng;
use serde::Serialize;

use super::{GeneratedImage, ImageJob, ImageProvider, ProviderError};
use crate::domain::{Model, now_ms};

/// How many recent errors a route remembers for the admin API.
const RECENT_ERRORS: usize = 10;

/// One way to make a model's images: a provider and the upstream model it is asked for.
pub struct Route {
    /// The provider's name in the configuration (`gemini`, `official`, `vertex-eu`, …).
    pub provider_name: String,
    pub provider: Arc<dyn ImageProvider>,
    pub upstream_model: String,
    /// Whether the upstream takes `imageSize` (Gemini 2.5 Flash Image does not).
    pub sends_image_size: bool,
    /// 1 is tried before 2; a route of a worse priority gets calls only while every better one
    /// is cooling down (or has failed this call).
    pub priority: u32,
    /// The share of calls among the routes of one priority.
    pub weight: u32,
    health: Mutex<Health>,
}

#[derive(Debug, Default)]
struct Health {
    cooling_until: Option<Instant>,
    cooling_until_ms: Option<i64>,
    consecutive_failures: u32,
    calls: u64,
    failures: u64,
    recent_errors: VecDeque<RecentError>,
}

/// An error a route answered, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct RecentError {
    /// Unix seconds.
    pub at: f64,
    pub error: String,
}

/// A route's state, as `GET /admin/routes` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    pub provider: String,
    pub kind: &'static str,
    pub upstream_model: String,
    pub priority: u32,
    pub weight: u32,
    /// `healthy` or `cooling`.
    pub state: &'static str,
    /// Unix seconds, while cooling.
    pub cooling_until: Option<f64>,
    pub calls: u64,
    pub failures: u64,
    pub recent_errors: Vec<RecentError>,
}

impl Route {
    pub fn new(
        provider_name: impl Into<String>,
        provider: Arc<dyn ImageProvider>,
        upstream_model: impl Into<String>,
        priority: u32,
        weight: u32,
    ) -> Route {
        let upstream_model = upstream_model.into();
        Route {
            provider_name: provider_name.into(),
            provider,
            sends_image_size: super::upstream_takes_image_size(&upstream_model),
            upstream_model,
            priority,
            weight: weight.max(1),
            health: Mutex::new(Health::default()),
        }
    }

    /// A label for logs and metrics: `provider/upstream-model`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider_name, self.upstream_model)
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // Each update is a few field writes: a panic elsewhere cannot leave one half-done.
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When its cooldown ends, if it is cooling down at `now`.
    fn cooling_until(&self, now: Instant) -> Option<Instant> {
        self.health().cooling_until.filter(|until| *until > now)
    }

    /// One call of this route's provider, and how long it took. Every provider's call passes
    /// here, so its outcome is logged (at debug level, with what was asked and what came back)
    /// once for all of them rather than by each provider. The caller keeps the route's health:
    /// [`Route::succeeded`] or [`Route::failed`].
    pub async fn generate(
        &self,
        job: &ImageJob,
    ) -> (Result<GeneratedImage, ProviderError>, Duration) {
        let provider = self.provider.name();
        let started = Instant::now();
        let result = self.provider.generate(job).await;
        let elapsed = started.elapsed();
        let elapsed_ms = elapsed.as_millis() as u64;
        match &result {
            Ok(image) => tracing::debug!(
                upstream_model = %job.upstream_model,
                inputs = job.inputs.len(),
                bytes = image.bytes.len(),
                elapsed_ms,
                "{provider} made an image"
            ),
            Err(err) => tracing::debug!(
                upstream_model = %job.upstream_model,
                inputs = job.inputs.len(),
                elapsed_ms,
                error = %err,
                "{provider} call failed"
            ),
        }
        (result, elapsed)
    }

    /// The route made an image.
    pub fn succeeded(&self) {
        let mut health = self.health();
        health.calls += 1;
        health.consecutive_failures = 0;
    }

    /// The route failed. A retryable failure cools it down: for as long as the upstream asked,
    /// else `backoff(consecutive failures)`. Returns the cooldown, if any.
    pub fn failed(
        &self,
        error: &ProviderError,
        backoff: impl FnOnce(u32) -> Duration,
    ) -> Option<Duration> {
        let mut health = self.health();
        health.calls += 1;
        health.failures += 1;
        if health.recent_errors.len() == RECENT_ERRORS {
            health.recent_errors.pop_front();
        }
        let mut message = error.to_string();
        message.truncate(message.floor_char_boundary(300));
        health.recent_errors.push_back(RecentError {
            at: now_ms() as f64 / 1000.0,
            error: message,
        });
        if !error.is_retryable() {
            return None;
        }
        health.consecutive_failures += 1;
        let cooldown = error
            .retry_after()
            .unwrap_or_else(|| backoff(health.consecutive_failures));
        health.cooling_until = Some(Instant::now() + cooldown);
        health.cooling_until_ms = Some(now_ms() + cooldown.as_millis() as i64);
        metrics::counter!("nano_banana_route_cooldowns_total", "route" => self.label())
            .increment(1);
        Some(cooldown)
    }

    pub fn status(&self) -> RouteStatus {
        let health = self.health();
        let cooling = health.cooling_until.is_some_and(|u| u > Instant::now());
        RouteStatus {
            provider: self.provider_name.clone(),
            kind: self.provider.name(),
            upstream_model: self.upstream_model.clone(),
            priority: self.priority,
            weight: self.weight,
            state: if cooling { "cooling" } else { "healthy" },
            cooling_until: health
                .cooling_until_ms
                .filter(|_| cooling)
                .map(|ms| ms as f64 / 1000.0),
            calls: health.calls,
            failures: health.failures,
            recent_errors: health.recent_errors.iter().cloned().collect(),
        }
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("provider", &self.provider_name)
            .field("upstream_model", &self.upstream_model)
            .field("priority", &self.priority)
            .field("weight", &self.weight)
            .finish()
    }
}

/// The next call of an image: a route to call, or how long to wait for one.
pub enum Pick<'a> {
    Call(usize, &'a Arc<Route>),
    /// Every route has been tried for this image or is cooling down: the earliest time one of
    /// them is free again (now, if none is cooling).
    Wait(Instant),
}

/// A model's routes, best priority first.
#[derive(Debug, Clone)]
pub struct ModelRoutes {
    routes: Vec<Arc<Route>>,
}

impl ModelRoutes {
    /// `None` when `routes` is empty.
    pub fn new(mut routes: Vec<Route>) -> Option<ModelRoutes> {
        if routes.is_empty() {
            return None;
        }
        routes.sort_by_key(|r| r.priority);
        Some(ModelRoutes {
            routes: routes.into_iter().map(Arc::new).collect(),
        })
    }

    /// The first route of the best priority: the upstream model a public name stands for.
    pub fn primary(&self) -> &Route {
        &self.routes[0]
    }

    pub fn all(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The route for the next call of an image that has already tried `tried` (indexes): the
    /// best priority among those neither tried nor cooling, one chosen at random by weight.
    pub fn pick(&self, tried: &[usize], now: Instant) -> Pick<'_> {
        let free: Vec<usize> = (0..self.routes.len())
            .filter(|i| !tried.contains(i) && self.routes[*i].cooling_until(now).is_none())
            .collect();
        let Some(best) = free.iter().map(|i| self.routes[*i].priority).min() else {
            let until = self
                .routes
                .iter()
                .filter_map(|r| r.cooling_until(now))
                .min()
                .unwrap_or(now);
            return Pick::Wait(until);
        };
        let group: Vec<usize> = free
            .into_iter()
            .filter(|i| self.routes[*i].priority == best)
            .collect();
        let total: u64 = group
            .iter()
            .map(|i| u64::from(self.routes[*i].weight))
            .sum();
        let mut ticket = rand::rng().random_range(0..total.max(1));
        for i in &group {
            let weight = u64::from(self.routes[*i].weight);
            if ticket < weight {
                return Pick::Call(*i, &self.routes[*i]);
            }
            ticket -= weight;
        }
        Pick::Call(group[0], &self.routes[group[0]])
    }
}

/// The model → routes table, built once from configuration.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    models: HashMap<Model, ModelRoutes>,
}

impl Routes {
    pub fn insert(&mut self, model: Model, routes: ModelRoutes) {
        self.models.insert(model, routes);
    }

    pub fn get(&self, model: Model) -> Option<&ModelRoutes> {
        self.models.get(&model)
    }

    /// The models this server offers, in the contract's order.
    pub fn offered(&self) -> Vec<Model> {
        Model::all()
            .filter(|m| self.models.contains_key(m))
            .collect()
    }

    /// The public model an upstream model id is offered as: the first, in the contract's order
    /// (so `nano-banana` before `nano-banana:official`), whose primary route names it.
    pub fn by_upstream(&self, upstream_model: &str) -> Option<Model> {
        self.offered()
            .into_iter()
            .find(|m| self.models[m].primary().upstream_model == upstream_model)
    }

    /// Whether any route ends at the offline placeholder (printed at start-up).
    pub fn uses_placeholder(&self) -> bool {
        self.models
            .values()
            .flat_map(|m| m.all())
            .any(|r| r.provider.name() == "placeholder")
    }

    /// Every offered model's routes and their state, for `GET /admin/routes`.
    pub fn status(&self) -> Vec<(Model, Vec<RouteStatus>)> {
        self.offered()
            .into_iter()
            .map(|m| {
                (
                    m,
                    self.models[&m].all().iter().map(|r| r.status()).collect(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
