//! The HTTP side of authentication: the `Authenticated` extractor reads `authorization: Bearer …`,
//! asks `accounts` who it is, and answers refusals with the contract's token errors. The token
//! itself is never stored or logged.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, request::Parts},
};

use super::{AppState, TraceId, error::HttpError};
use crate::{
    accounts::{AuthError, Caller},
    api::{ApiError, ErrorCode, IMAGES_API_ID},
};

/// The caller of an API route, authenticated.
pub struct Authenticated(pub Caller);

/// The credential of `authorization: Bearer <credential>` (scheme case-insensitive); `None` when
/// the header is absent, of another scheme, or empty.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty()).then_some(credential)
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, HttpError> {
        let trace_id = parts
            .extensions
            .get::<TraceId>()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        let Some(token) = bearer(&parts.headers) else {
            return Err(HttpError::code(
                &trace_id,
                ErrorCode::NoToken,
                "No token was provided: send `authorization: Bearer <token>`.",
            ));
        };
        match state.accounts.authenticate(token, IMAGES_API_ID).await {
            Ok(caller) => Ok(Authenticated(caller)),
            Err(e) => Err(HttpError::new(&trace_id, auth_error(&trace_id, e))),
        }
    }
}

/// A refused token as the contract's error; a failed lookup is logged and answered as internal.
pub fn auth_error(trace_id: &str, error: AuthError) -> ApiError {
    let code = match &error {
        AuthError::Invalid => ErrorCode::InvalidToken,
        AuthError::Expired => ErrorCode::TokenExpired,
        AuthError::Mismatched => ErrorCode::TokenMismatched,
        AuthError::Disabled => ErrorCode::Disabled,
        AuthError::Lookup(e) => {
            tracing::error!(error = %e, trace_id = %trace_id, "token lookup failed");
            return ApiError::internal();
        }
    };
    ApiError::new(code, error.to_string())
}
