//! The admin service: applications, tokens, credits, limits and usage. One set of requests,
//! reached three ways — the `/admin/` HTTP API, `nano-banana admin --server` (which calls that
//! API), and `nano-banana admin` directly on a stopped server's database — all of them through
//! `Admin::run`, so they cannot drift apart. The requests are our own types: the HTTP layer and
//! the command line each build them from what they parse.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::tokens::{new_token, token_hash, token_prefix};
pub use crate::storage::db::Limits;
use crate::{
    domain::now_ms,
    storage::{Db, db::DbError},
};

/// One administrative request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRequest {
    CreateApplication(NewApplication),
    ListApplications,
    ShowApplication {
        id: String,
    },
    /// Adds credits to a balance (a `topup` ledger entry).
    TopUp {
        id: String,
        credits: i64,
    },
    /// `true`: every request of the application answers `disabled`.
    SetDisabled {
        id: String,
        disabled: bool,
    },
    /// Replaces the application's limits; omitted ones become unlimited.
    SetLimits {
        id: String,
        limits: Limits,
    },
    CreateToken(NewToken),
    ListTokens {
        application_id: Option<String>,
    },
    RevokeToken {
        id: String,
    },
    /// Images, credits and failures per application, model and day.
    Usage,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct NewApplication {
    pub name: String,
    /// The opening balance.
    #[serde(default)]
    pub credits: i64,
    #[serde(flatten)]
    pub limits: Limits,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Set from the path on the HTTP API, from the argument on the command line.
    #[serde(skip)]
    pub application_id: String,
    #[serde(default)]
    pub name: String,
    /// Unix seconds; never expires when `None`.
    pub expires_at: Option<i64>,
    /// Comma-separated API ids the token may call; all when `None`.
    pub apis: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such application or token: 404 on the HTTP API.
    #[error("{0}")]
    NotFound(String),
    /// A value out of range: 400 on the HTTP API.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The admin key from configuration. Compared by digest, so the comparison takes the same time
/// wherever a guess differs from it.
pub struct AdminKey(Vec<u8>);

impl AdminKey {
    pub fn new(key: &str) -> AdminKey {
        AdminKey(Sha256::digest(key.as_bytes()).to_vec())
    }

    pub fn matches(&self, given: &str) -> bool {
        Sha256::digest(given.as_bytes()).as_slice() == self.0.as_slice()
    }
}

pub struct Admin<'a> {
    pub db: &'a Db,
}

impl Admin<'_> {
    pub async fn run(&self, request: &AdminRequest) -> Result<Value, AdminError> {
        match request {
            AdminRequest::CreateApplication(new) => self.create_application(new).await,
            AdminRequest::ListApplications => {
                Ok(json!({"applications": self.db.list_applications().await?}))
            }
            AdminRequest::ShowApplication { id } => self.show(id).await,
            AdminRequest::TopUp { id, credits } => {
                if *credits <= 0 {
                    return Err(AdminError::Invalid(
                        "credits must be a positive number.".into(),
                    ));
                }
                if *credits > MAX_CREDITS {
                    return Err(over_max_credits());
                }
                if !(self.db)
                    .add_credits(id, *credits, MAX_CREDITS, "topup", now_ms())
                    .await?
                {
                    // No such application (`show` says so), or the balance would pass the cap.
                    self.show(id).await?;
                    return Err(over_max_credits());
                }
                self.show(id).await
            }
            AdminRequest::SetDisabled { id, disabled } => {
                if !self.db.set_application_disabled(id, *disabled).await? {
                    return Err(no_application(id));
                }
                self.show(id).await
            }
            AdminRequest::SetLimits { id, limits } => {
                check_limits(limits)?;
                self.set_limits(id, limits).await?;
                self.show(id).await
            }
            AdminRequest::CreateToken(new) => self.create_token(new).await,
            AdminRequest::ListTokens { application_id } => {
                let tokens = self.db.list_tokens(application_id.as_deref()).await?;
                Ok(json!({"tokens": tokens}))
            }
            AdminRequest::RevokeToken { id } => {
                if !self.db.revoke_token(id).await? {
                    return Err(AdminError::NotFound(format!("no token {id}.")));
                }
                Ok(json!({"id": id, "revoked": true}))
            }
            AdminRequest::Usage => Ok(json!({"usage": self.db.usage().await?})),
        }
    }

    async fn create_application(&self, new: &NewApplication) -> Result<Value, AdminError> {
        let name = new.name.trim();
        if name.is_empty() {
            return Err(AdminError::Invalid("name must not be empty.".into()));
        }
        if new.credits < 0 {
            return Err(AdminError::Invalid("credits cannot be negative.".into()));
        }
        if new.credits > MAX_CREDITS {
            return Err(over_max_credits());
        }
        check_limits(&new.limits)?;
        let id = uuid::Uuid::new_v4().to_string();
        let user_id = uuid::Uuid::new_v4().to_string();
        self.db
            .create_application(&id, name, &user_id, new.credits, now_ms())
            .await?;
        self.set_limits(&id, &new.limits).await?;
        self.show(&id).await
    }

    async fn create_token(&self, new: &NewToken) -> Result<Value, AdminError> {
        let application_id = &new.application_id;
        if self.db.get_application(application_id).await?.is_none() {
            return Err(no_application(application_id));
        }
        let token = new_token();
        let id = uuid::Uuid::new_v4().to_string();
        self.db
            .create_token(
                &id,
                application_id,
                &token_hash(&token),
                &token_prefix(&token),
                &new.name,
                now_ms(),
            )
            .await?;
        let apis = new.apis.as_deref().unwrap_or("*");
        let expires_ms = new.expires_at.map(|s| s.saturating_mul(1000));
        self.db.set_token_details(&id, expires_ms, apis).await?;
        Ok(json!({
            "id": id, "application_id": application_id, "token": token,
            "prefix": token_prefix(&token), "name": new.name, "apis": apis,
            "expires_at": new.expires_at,
            "note": "The token is shown only this once; only its hash is stored."
        }))
    }

    async fn show(&self, id: &str) -> Result<Value, AdminError> {
        let app = self
            .db
            .get_application(id)
            .await?
            .ok_or_else(|| no_application(id))?;
        Ok(serde_json::to_value(app).unwrap_or(Value::Null))
    }

    async fn set_limits(&self, id: &str, limits: &Limits) -> Result<(), AdminError> {
        let found = self.db.set_application_limits(id, *limits).await?;
        if found {
            Ok(())
        } else {
            Err(no_application(id))
        }
    }
}

fn check_limits(limits: &Limits) -> Result<(), AdminError> {
    for (name, value) in [
        ("rate_per_minute", limits.rate_per_minute),
        ("burst", limits.burst),
        ("max_concurrent", limits.max_concurrent),
    ] {
        if value.is_some_and(|v| v < 1) {
            return Err(AdminError::Invalid(format!("{name} must be at least 1.")));
        }
    }
    if limits.retention_seconds.is_some_and(|s| s < 0) {
        return Err(AdminError::Invalid(
            "retention_seconds must be 0 (keep forever) or more.".into(),
        ));
    }
    Ok(())
}

/// The largest balance an application may hold: 2^53 - 1, the largest integer every JSON client
/// reads exactly. It also keeps balances and ledger sums far from `i64` overflow, which SQLite
/// answers by turning the sum into a float (that no read of the row survives) and PostgreSQL
/// with an error.
pub const MAX_CREDITS: i64 = 9_007_199_254_740_991;

fn over_max_credits() -> AdminError {
    AdminError::Invalid(format!("credits: a balance can be at most {MAX_CREDITS}."))
}

fn no_application(id: &str) -> AdminError {
    AdminError::NotFound(format!("no application {id}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_key_matches_only_itself() {
        let key = AdminKey::new("a-long-admin-secret");
        assert!(key.matches("a-long-admin-secret"));
        assert!(!key.matches("a-long-admin-secreT"));
        assert!(!key.matches(""));
    }

    #[test]
    fn limits_below_one_are_refused_by_name() {
        let limits = Limits {
            burst: Some(0),
            ..Limits::default()
        };
        assert_eq!(
            check_limits(&limits).unwrap_err().to_string(),
            "burst must be at least 1."
        );
        assert!(check_limits(&Limits::default()).is_ok());
    }
}
