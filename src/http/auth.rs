//! Bearer-token authentication: the `Authenticated` extractor resolves `authorization: Bearer …`
//! to the calling application, or answers with the contract's token errors. Tokens are looked up
//! by their SHA-256 hash; the token itself is never stored or logged.

use axum::{extract::FromRequestParts, http::request::Parts};
use sha2::{Digest, Sha256};

use super::{AppState, TraceId, error::HttpError};
use crate::{
    api::{ApiError, ErrorCode},
    tasks::{Caller, IMAGES_API_ID, now_ms},
};

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

        let row = match state.tasks.db().find_token(&token_hash(token)).await {
            Ok(row) => row,
            Err(e) => {
                tracing::error!(error = %e, trace_id = %trace_id, "token lookup failed");
                return Err(HttpError::new(&trace_id, ApiError::internal()));
            }
        };
        let Some(row) = row else {
            return Err(fail(ErrorCode::InvalidToken, "The token is invalid."));
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
