//! Tokens as values: making a new one, the hash the database keeps, the prefix listings show,
//! and the short-lived cache of lookups by hash. Nothing here reads the database.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use rand::{Rng, distr::Alphanumeric};

use crate::{domain::sha256_hex, storage::db::TokenRow};

/// `nb-` and 40 random alphanumerics (about 238 bits).
pub fn new_token() -> String {
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("nb-{random}")
}

/// The hex SHA-256 of a token: what the database keeps. Tokens are 190+ bits of randomness, so a
/// fast hash is enough (a slow password hash would only slow every request).
pub fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// The short visible part of a token, shown in listings.
pub fn token_prefix(token: &str) -> String {
    token.chars().take(8).collect()
}

/// Token lookups (the token's row and its application's) reused for a short time, by token hash:
/// a request then costs no database read before its admission (BENCHMARKS.md, S1). What is
/// reused is checked again on every request (revoked, expired, disabled), so the cache only
/// delays what changes elsewhere: the admin service empties it in this process, and other nodes
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

    pub(super) fn get(&self, hash: &str) -> Option<TokenRow> {
        let entries = self.lock();
        let (at, row) = entries.get(hash)?;
        (at.elapsed() < self.ttl).then(|| row.clone())
    }

    pub(super) fn put(&self, hash: String, row: &TokenRow) {
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

    /// Forgets every lookup: after the admin service changed tokens or applications.
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
