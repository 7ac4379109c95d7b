//! The HTTP side of authentication: the `Authenticated` extractor reads the request's credential
//! (`authorization: Bearer …`, or for Gemini's dialect `x-goog-api-key` / `?key=`), asks
//! `accounts` who it is, and answers refusals in the route's dialect. The token itself is never
//! stored or logged.

use std::marker::PhantomData;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, request::Parts},
    response::Response,
};

use super::{
    AppState, TraceId,
    dialect::{Contract, Dialect},
};
use crate::{
    accounts::{AuthError, Caller},
    api::{ApiError, ErrorCode, IMAGES_API_ID},
};

/// The caller of an API route, authenticated; refusals are answered in dialect `D`.
pub struct Authenticated<D = Contract> {
    pub caller: Caller,
    dialect: PhantomData<D>,
}

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

impl<D: Dialect> FromRequestParts<AppState> for Authenticated<D> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let trace_id = parts
            .extensions
            .get::<TraceId>()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        let Some(token) = D::credential(parts) else {
            let error = ApiError::new(ErrorCode::NoToken, D::NO_TOKEN);
            return Err(D::error(&trace_id, &error, None));
        };
        match state.accounts.authenticate(&token, IMAGES_API_ID).await {
            Ok(caller) => Ok(Authenticated {
                caller,
                dialect: PhantomData,
            }),
            Err(e) => Err(D::error(&trace_id, &auth_error(&trace_id, e), None)),
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
            return if e.is_unavailable() {
                ApiError::unavailable("database")
            } else {
                ApiError::internal()
            };
        }
    };
    ApiError::new(code, error.to_string())
}
