//! Accounts: applications, their tokens and credits — who may call, and as whom. Owns making,
//! hashing and caching tokens; authenticating a token to a `Caller` (or a typed refusal); the
//! first application on an empty database; and the admin service (`admin.rs`).
//!
//! Not here: reading the `authorization` header and turning refusals into answers (`http`),
//! the SQL (`storage::db`), reserving and settling credits for a task (`tasks`, in the same
//! transaction as the task itself). May import `api`, `domain` and `storage`; never `http`,
//! `tasks` or `app`.

use std::time::Duration;

use crate::{
    domain::now_ms,
    storage::{
        Db,
        db::{ApplicationRow, DbError, TokenInfo, UsageRow},
    },
};

mod admin;
mod tokens;

pub use admin::{Admin, AdminError, AdminKey, AdminRequest, Limits, NewApplication, NewToken};
pub use tokens::{TokenCache, new_token, token_hash, token_prefix};

/// Who is asking: the application (and its user and token) a request's token belongs to.
#[derive(Debug, Clone)]
pub struct Caller {
    pub application_id: String,
    pub user_id: String,
    pub token_id: String,
    /// The application's request rate limit, if it has one: (per minute, burst).
    pub rate_limit: Option<(u64, u64)>,
}

/// Why a token was refused; each is one of the contract's error codes.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown or revoked (`invalid_token`).
    #[error("The token is invalid.")]
    Invalid,
    /// Past its expiry (`token_expired`).
    #[error("The token has expired.")]
    Expired,
    /// Not valid for this API (`token_mismatched`).
    #[error("The token is not valid for this API.")]
    Mismatched,
    /// Its application is disabled (`disabled`).
    #[error("The token's application is disabled.")]
    Disabled,
    /// The database could not be asked.
    #[error("token lookup failed: {0}")]
    Lookup(#[from] DbError),
}

/// The accounts service shared by the HTTP handlers.
pub struct Accounts {
    db: Db,
    tokens: TokenCache,
}

impl Accounts {
    /// `token_cache`: how long a token lookup is reused (zero: never).
    pub fn new(db: Db, token_cache: Duration) -> Accounts {
        Accounts {
            db,
            tokens: TokenCache::new(token_cache),
        }
    }

    /// The caller behind `token`, if it may call the API `api_id`.
    pub async fn authenticate(&self, token: &str, api_id: &str) -> Result<Caller, AuthError> {
        let hash = token_hash(token);
        let row = match self.tokens.get(&hash) {
            Some(row) => row,
            // Boxed: the query's future would otherwise size every request's handler future,
            // which a sync request keeps for its whole wait (BENCHMARKS.md, S3).
            None => match Box::pin(self.db.find_token(&hash)).await? {
                Some(row) => {
                    self.tokens.put(hash, &row);
                    row
                }
                // Unknown tokens are not remembered: a token made on another node works at once.
                None => return Err(AuthError::Invalid),
            },
        };
        if row.revoked {
            return Err(AuthError::Invalid);
        }
        if row.expires_at.is_some_and(|at| at <= now_ms()) {
            return Err(AuthError::Expired);
        }
        if row.apis != "*" && !row.apis.split(',').any(|api| api.trim() == api_id) {
            return Err(AuthError::Mismatched);
        }
        if row.application_disabled {
            return Err(AuthError::Disabled);
        }
        let rate_limit = row.rate_per_minute.filter(|r| *r > 0).map(|rate| {
            let burst = row.burst.filter(|b| *b > 0).unwrap_or(1);
            (rate as u64, burst as u64)
        });
        Ok(Caller {
            application_id: row.application_id,
            user_id: row.user_id,
            token_id: row.token_id,
            rate_limit,
        })
    }

    /// Runs an admin request. Tokens and applications may have changed (revoked, disabled, new
    /// limits), so this process's token lookups are forgotten: the next request of every token
    /// reads them again.
    pub async fn administer(
        &self,
        request: &AdminRequest,
    ) -> Result<serde_json::Value, AdminError> {
        let outcome = Admin { db: &self.db }.run(request).await;
        self.tokens.clear();
        outcome
    }

    /// An application's row (balance, limits), for the console's account page.
    pub async fn application(&self, id: &str) -> Result<Option<ApplicationRow>, DbError> {
        self.db.get_application(id).await
    }

    /// Every application, for the console's admin area.
    pub async fn applications(&self) -> Result<Vec<ApplicationRow>, DbError> {
        self.db.list_applications().await
    }

    /// An application's tokens (prefixes only: the tokens themselves are never stored).
    pub async fn tokens_of(&self, application_id: &str) -> Result<Vec<TokenInfo>, DbError> {
        self.db.list_tokens(Some(application_id)).await
    }

    /// Usage per model and day: of one application, or of all with `None`.
    pub async fn usage(&self, application_id: Option<&str>) -> Result<Vec<UsageRow>, DbError> {
        let mut rows = self.db.usage().await?;
        if let Some(id) = application_id {
            rows.retain(|row| row.application_id == id);
        }
        Ok(rows)
    }

    /// Revokes `token_id` if it is one of `application_id`'s tokens; `false` if it is not.
    pub async fn revoke_token_of(
        &self,
        application_id: &str,
        token_id: &str,
    ) -> Result<bool, AdminError> {
        let owned = self
            .tokens_of(application_id)
            .await?
            .iter()
            .any(|token| token.id == token_id);
        if !owned {
            return Ok(false);
        }
        let revoke = AdminRequest::RevokeToken {
            id: token_id.to_owned(),
        };
        self.administer(&revoke).await?;
        Ok(true)
    }

    /// On an empty database, creates the first application (with `credits`) and its token, and
    /// returns the token: the only time it is ever available in clear. `wanted` chooses the
    /// token (scripted deployments); otherwise it is random.
    pub async fn bootstrap(
        &self,
        wanted: Option<&str>,
        credits: i64,
    ) -> Result<Option<String>, DbError> {
        if self.db.count_tokens().await? > 0 {
            return Ok(None);
        }
        let token = match wanted {
            Some(token) => token.to_owned(),
            None => new_token(),
        };
        let created = self
            .db
            .create_first_application(
                &uuid::Uuid::new_v4().to_string(),
                &uuid::Uuid::new_v4().to_string(),
                credits,
                &uuid::Uuid::new_v4().to_string(),
                &token_hash(&token),
                &token_prefix(&token),
                now_ms(),
            )
            .await?;
        // Not created: another node starting at the same moment made it.
        Ok(created.then_some(token))
    }
}
