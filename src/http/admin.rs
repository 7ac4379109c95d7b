//! `/admin/…`: the administration API (ours). Protected by the admin key from configuration
//! (`authorization: Bearer KEY`); when none is configured these routes do not exist (404
//! `no_api`). Each route builds an `AdminCommand` and runs it, exactly as the CLI does.

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, Query, Request, State, rejection::BytesRejection},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{AppState, HttpError, TraceId, images::parse_json_body};
use crate::{
    admin::{Admin, AdminCommand, AdminError, AppsCommand, Limits, TokensCommand},
    api::{ApiError, ErrorCode},
};

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/apps", post(create_app).get(list_apps))
        .route("/admin/apps/{id}", get(show_app))
        .route("/admin/apps/{id}/topup", post(topup))
        .route("/admin/apps/{id}/disable", post(disable))
        .route("/admin/apps/{id}/enable", post(enable))
        .route("/admin/apps/{id}/limits", put(limits))
        .route("/admin/apps/{id}/tokens", post(create_token))
        .route("/admin/tokens", get(list_tokens))
        .route("/admin/tokens/{id}/revoke", post(revoke_token))
        .route("/admin/usage", get(usage))
        .route_layer(middleware::from_fn_with_state(state, require_admin_key))
}

async fn require_admin_key(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &state.admin_key else {
        return HttpError::code(&trace_id, ErrorCode::NoApi, "No API at this path.")
            .into_response();
    };
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim());
    let Some(given) = given else {
        return HttpError::code(&trace_id, ErrorCode::NoToken, "The admin key is required.")
            .into_response();
    };
    // Compare digests, so the comparison takes the same time wherever the keys differ.
    if Sha256::digest(given.as_bytes()) != Sha256::digest(expected.as_bytes()) {
        return HttpError::code(
            &trace_id,
            ErrorCode::InvalidToken,
            "The admin key is invalid.",
        )
        .into_response();
    }
    next.run(request).await
}

async fn run(
    state: &AppState,
    trace_id: &str,
    command: AdminCommand,
) -> Result<Json<Value>, HttpError> {
    let admin = Admin {
        db: state.tasks.db(),
    };
    let outcome = admin.run(&command).await;
    // Tokens and applications may have changed (revoked, disabled, new limits): the next
    // request of every token reads them again.
    state.tokens.clear();
    outcome.map(Json).map_err(|e| match e {
        AdminError::NotFound(message) => HttpError::code(trace_id, ErrorCode::NoApi, message),
        AdminError::Invalid(message) => HttpError::code(trace_id, ErrorCode::BadRequest, message),
        AdminError::Db(e) => {
            tracing::error!(error = %e, trace_id = %trace_id, "admin command failed");
            HttpError::new(trace_id, ApiError::internal())
        }
    })
}

fn body<T: for<'de> Deserialize<'de>>(
    trace_id: &str,
    raw: Result<Bytes, BytesRejection>,
) -> Result<T, HttpError> {
    let value = parse_json_body(trace_id, raw)?;
    serde_json::from_value(value).map_err(|e| {
        HttpError::code(
            trace_id,
            ErrorCode::BadRequest,
            format!("Invalid body: {e}."),
        )
    })
}

#[derive(Deserialize)]
struct NewApp {
    name: String,
    #[serde(default)]
    credits: i64,
    #[serde(flatten)]
    limits: Limits,
}

async fn create_app(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let new: NewApp = body(&trace_id, raw)?;
    let command = AppsCommand::Create {
        name: new.name,
        credits: new.credits,
        limits: new.limits,
    };
    run(&state, &trace_id, AdminCommand::Apps(command)).await
}

async fn list_apps(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
) -> Result<Json<Value>, HttpError> {
    run(&state, &trace_id, AdminCommand::Apps(AppsCommand::List)).await
}

async fn show_app(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    run(
        &state,
        &trace_id,
        AdminCommand::Apps(AppsCommand::Show { id }),
    )
    .await
}

#[derive(Deserialize)]
struct Topup {
    credits: i64,
}

async fn topup(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let Topup { credits } = body(&trace_id, raw)?;
    run(
        &state,
        &trace_id,
        AdminCommand::Apps(AppsCommand::Topup { id, credits }),
    )
    .await
}

async fn disable(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    run(
        &state,
        &trace_id,
        AdminCommand::Apps(AppsCommand::Disable { id }),
    )
    .await
}

async fn enable(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    run(
        &state,
        &trace_id,
        AdminCommand::Apps(AppsCommand::Enable { id }),
    )
    .await
}

async fn limits(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let limits: Limits = body(&trace_id, raw)?;
    run(
        &state,
        &trace_id,
        AdminCommand::Apps(AppsCommand::Limits { id, limits }),
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[serde(default)]
    name: String,
    expires_at: Option<i64>,
    apis: Option<String>,
}

async fn create_token(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(application_id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let new: NewToken = body(&trace_id, raw)?;
    let command = TokensCommand::Create {
        application_id,
        name: new.name,
        expires_at: new.expires_at,
        apis: new.apis,
    };
    run(&state, &trace_id, AdminCommand::Tokens(command)).await
}

#[derive(Deserialize)]
struct TokenFilter {
    application_id: Option<String>,
}

async fn list_tokens(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Query(filter): Query<TokenFilter>,
) -> Result<Json<Value>, HttpError> {
    let command = TokensCommand::List {
        application_id: filter.application_id,
    };
    run(&state, &trace_id, AdminCommand::Tokens(command)).await
}

async fn revoke_token(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    run(
        &state,
        &trace_id,
        AdminCommand::Tokens(TokensCommand::Revoke { id }),
    )
    .await
}

async fn usage(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
) -> Result<Json<Value>, HttpError> {
    run(&state, &trace_id, AdminCommand::Usage).await
}
