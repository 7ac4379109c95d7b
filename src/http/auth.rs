//! Bearer-token authentication: the `Authenticated` extractor resolves `authorization: Bearer …`
//! to the calling application, or answers with the contract's token errors. Tokens are looked up
//! by their SHA-256 hash; the token itself is never stored or logged.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{extract::FromRequestParts, http::request::Parts};
use sha2::{Digest, Sha256};

use super::{AppState, TraceId, error::HttpError};
use crate::{
    api::{ApiError, ErrorCode},
    storage::db::TokenRow,
    tasks::{Caller, IMAGES_API_ID, now_ms},
};

/// Token lookups (the token's row and its application's) reused for a short time, by token hash:
/// a request then costs no database read before its admission (BENCHMARKS.md, S1). What is
/// reused is checked again on every request (revoked, expired, disabled), so the cache only
/// delays what changes elsewhere: the admin API empties it in this process, and other nodes
/// see a change within `ttl`.
pub struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, TokenRow)>>,
}

/// The most tokens remembered; past it, the stale ones are dropped (all of them if none is).
const TOKEN_CACHE_ENTRIES: usize = 10_000;

impl TokenCache {
    /// `ttl` zero: nothing is remembered.
    pub fn new(ttl: Duration) -> TokenCache {
        TokenCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, hash: &str) -> Option<TokenRow> {
        let entries = self.lock();
        let (at, row) = entries.get(hash)?;
        (at.elapsed() < self.ttl).then(|| row.clone())
    }

    fn put(&self, hash: String, row: &TokenRow) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= TOKEN_CACHE_ENTRIES {
            entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if entries.len() >= TOKEN_CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(hash, (Instant::now(), row.clone()));
    }

    /// Forgets every lookup: after the admin API changed tokens or applications.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, TokenRow)>> {
        // Single inserts, removes and clears: a panic elsewhere cannot leave the map half-done.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The caller of an API route, authenticated.
pub struct Authenticated(pub Caller);

/// The hex SHA-256 of a token: what the database keeps. Tokens are 190+ bits of randomness, so a
/// fast hash is enough (a slow password hash would only slow every request).
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, HttpError> {
        let trace_id = parts
            .extensions
            .get::<TraceId>()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        let fail = |code: ErrorCode, message: &str| HttpError::code(&trace_id, code, message);

        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(fail(
                ErrorCode::NoToken,
                "No token was provided: send `authorization: Bearer <token>`.",
            ));
        };
        let token = header
            .to_str()
            .ok()
            .map(str::trim)
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty());
        let Some(token) = token else {
            return Err(fail(
                ErrorCode::NoToken,
                "No token was provided: send `authorization: Bearer <token>`.",
            ));
        };

        let hash = token_hash(token);
        let row = match state.tokens.get(&hash) {
            Some(row) => row,
            // Boxed: the query's future would otherwise size every request's handler future,
            // which a sync request keeps for its whole wait (BENCHMARKS.md, S3).
            None => match Box::pin(state.tasks.db().find_token(&hash)).await {
                Ok(Some(row)) => {
                    state.tokens.put(hash, &row);
                    row
                }
                // Unknown tokens are not remembered: a token made on another node works at once.
                Ok(None) => {
                    return Err(fail(ErrorCode::InvalidToken, "The token is invalid."));
                }
                Err(e) => {
                    tracing::error!(error = %e, trace_id = %trace_id, "token lookup failed");
                    return Err(HttpError::new(&trace_id, ApiError::internal()));
                }
            },
        };
        if row.revoked {
            return Err(fail(ErrorCode::InvalidToken, "The token is invalid."));
        }
        if row.expires_at.is_some_and(|at| at <= now_ms()) {
            return Err(fail(ErrorCode::TokenExpired, "The token has expired."));
        }
        if row.apis != "*" && !row.apis.split(',').any(|api| api.trim() == IMAGES_API_ID) {
            return Err(fail(
                ErrorCode::TokenMismatched,
                "The token is not valid for this API.",
            ));
        }
        if row.application_disabled {
            return Err(fail(
                ErrorCode::Disabled,
                "The token's application is disabled.",
            ));
        }
        let rate_limit = row.rate_per_minute.filter(|r| *r > 0).map(|rate| {
            let burst = row.burst.filter(|b| *b > 0).unwrap_or(1);
            (rate as u64, burst as u64)
        });
        Ok(Authenticated(Caller {
            application_id: row.application_id,
            user_id: row.user_id,
            token_id: row.token_id,
            rate_limit,
        }))
    }
}
