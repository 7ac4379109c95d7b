//! `POST /nano-banana/tasks` (and aliases): `retrieve` one task record or `retrieve_batch` many.
//! Only the caller's own application's tasks are visible; polling is free.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
};
use serde_json::{Value, json};

use super::{AppState, HttpError, TraceId, auth::Authenticated, images::parse_json_body};
use crate::api::{ApiError, ErrorCode};

/// The contract's cap on `ids` in one `retrieve_batch`.
const MAX_BATCH_IDS: usize = 50;

pub async fn retrieve(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Authenticated(caller): Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, HttpError> {
    let body = parse_json_body(&trace_id, body)?;
    let bad = |message: &str| HttpError::code(&trace_id, ErrorCode::BadRequest, message);
    let Some(object) = body.as_object() else {
        return Err(bad("the request body must be a JSON object."));
    };
    let internal = |e: crate::tasks::TaskError| {
        tracing::error!(error = %e, trace_id = %trace_id, "task lookup failed");
        HttpError::new(&trace_id, ApiError::internal())
    };
    match object.get("action") {
        None | Some(Value::Null) => {}
        Some(Value::String(action)) if action == "retrieve" => {}
        Some(Value::String(action)) if action == "retrieve_batch" => {
            let ids = match object.get("ids") {
                Some(Value::Array(ids)) => ids,
                None | Some(Value::Null) => {
                    return Err(bad("ids is required for action retrieve_batch."));
                }
                Some(_) => return Err(bad("ids must be an array of strings.")),
            };
            if ids.len() > MAX_BATCH_IDS {
                return Err(bad("ids has too many items: at most 50 are allowed."));
            }
            let ids = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    id.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad(&format!("ids[{i}] must be a string.")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let items = state
                .tasks
                .retrieve_batch(&caller.application_id, &ids)
                .await
                .map_err(internal)?;
            let count = items.len();
            return Ok(Json(json!({"items": items, "count": count})));
        }
        Some(_) => return Err(bad("action must be one of: retrieve, retrieve_batch.")),
    }
    let id = match object.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        None | Some(Value::Null) => return Err(bad("id is required.")),
        Some(_) => return Err(bad("id must be a non-empty string.")),
    };
    let record = state
        .tasks
        .retrieve(&caller.application_id, id)
        .await
        .map_err(internal)?;
    Ok(Json(record.unwrap_or_else(|| json!({}))))
}
