//! `/admin/…`: the administration API (ours). Protected by the admin key from configuration
//! (`authorization: Bearer KEY`); when none is configured these routes do not exist (404
//! `no_api`). Each route builds an `AdminRequest` and runs it through `accounts`, exactly as the
//! CLI does.

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{
        Path, Query, Request, State,
        rejection::{BytesRejection, QueryRejection},
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, HttpError, TraceId, auth::bearer, images::parse_json_body};
use crate::{
    accounts::{AdminError, AdminRequest, Limits, NewApplication, NewToken},
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
        .route("/admin/routes", get(routes_status))
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
    let Some(given) = bearer(request.headers()) else {
        return HttpError::code(&trace_id, ErrorCode::NoToken, "The admin key is required.")
            .into_response();
    };
    if !expected.matches(given) {
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
    request: AdminRequest,
) -> Result<Json<Value>, HttpError> {
    let outcome = state.accounts.administer(&request).await;
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
    let mut value = parse_json_body(trace_id, raw)?;
    // `5.0` is the same JSON number as `5` (JSON Schema's `integer` takes both), but serde's
    // `i64` takes only the latter: make whole top-level numbers integers (the bodies are flat).
    if let Value::Object(fields) = &mut value {
        for field in fields.values_mut() {
            if let Some(f) = field.as_f64().filter(|_| field.is_f64())
                && f.fract() == 0.0
                && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f)
            {
                *field = Value::from(f as i64);
            }
        }
    }
    serde_json::from_value(value).map_err(|e| {
        HttpError::code(
            trace_id,
            ErrorCode::BadRequest,
            format!("Invalid body: {e}."),
        )
    })
}

async fn create_app(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let new: NewApplication = body(&trace_id, raw)?;
    run(&state, &trace_id, AdminRequest::CreateApplication(new)).await
}

async fn list_apps(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
) -> Result<Json<Value>, HttpError> {
    run(&state, &trace_id, AdminRequest::ListApplications).await
}

async fn show_app(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    run(&state, &trace_id, AdminRequest::ShowApplication { id }).await
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
    run(&state, &trace_id, AdminRequest::TopUp { id, credits }).await
}

async fn disable(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let request = AdminRequest::SetDisabled { id, disabled: true };
    run(&state, &trace_id, request).await
}

async fn enable(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    let request = AdminRequest::SetDisabled {
        id,
        disabled: false,
    };
    run(&state, &trace_id, request).await
}

async fn limits(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let limits: Limits = body(&trace_id, raw)?;
    run(&state, &trace_id, AdminRequest::SetLimits { id, limits }).await
}

async fn create_token(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(application_id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let new = NewToken {
        application_id,
        ..body(&trace_id, raw)?
    };
    run(&state, &trace_id, AdminRequest::CreateToken(new)).await
}

#[derive(Deserialize)]
struct TokenFilter {
    application_id: Option<String>,
}

async fn list_tokens(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    filter: Result<Query<TokenFilter>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    // axum's own rejection (e.g. `application_id` given twice) is plain text: say it in ours.
    let Query(filter) = filter.map_err(|e| {
        HttpError::code(
            &trace_id,
            ErrorCode::BadRequest,
            format!("Invalid query: {}.", e.body_text()),
        )
    })?;
    let request = AdminRequest::ListTokens {
        application_id: filter.application_id,
    };
    run(&state, &trace_id, request).await
}

async fn revoke_token(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(id): Path<String>,
) -> Result<Json<Value>, HttpError> {
    run(&state, &trace_id, AdminRequest::RevokeToken { id }).await
}

async fn usage(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
) -> Result<Json<Value>, HttpError> {
    run(&state, &trace_id, AdminRequest::Usage).await
}

/// `GET /admin/routes`: each model's routes and their state in this process (healthy or cooling
/// down, until when, recent errors). Nodes keep their own view.
async fn routes_status(State(state): State<AppState>) -> Json<Value> {
    let models: Vec<Value> = state
        .tasks
        .route_status()
        .into_iter()
        .map(|(model, routes)| json!({"model": model.name(), "routes": routes}))
        .collect();
    Json(json!({"models": models}))
}
