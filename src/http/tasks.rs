//! `POST /nano-banana/tasks` (and aliases): `retrieve` one task record or `retrieve_batch` many.
//! Only the caller's own application's tasks are visible; polling is free.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{AppState, HttpError, TraceId, auth::Authenticated, images::parse_json_body};
use crate::{
    api::{ApiError, TaskBatch},
    domain::TasksRequest,
};

pub async fn retrieve(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Authenticated { caller, .. }: Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let body = parse_json_body(&trace_id, body)?;
    let request = TasksRequest::parse(&body)
        .map_err(|e| HttpError::new(&trace_id, ApiError::bad_request(e.0)))?;
    let internal = |e: crate::tasks::TaskError| {
        tracing::error!(error = %e, trace_id = %trace_id, "task lookup failed");
        let unavailable = matches!(&e, crate::tasks::TaskError::Db(db) if db.is_unavailable());
        HttpError::new(
            &trace_id,
            if unavailable {
                ApiError::unavailable("database")
            } else {
                ApiError::internal()
            },
        )
    };
    let answer = match request {
        TasksRequest::Retrieve { id } => {
            match state
                .tasks
                .retrieve(&caller.application_id, &id)
                .await
                .map_err(internal)?
            {
                Some(record) => Json(record).into_response(),
                // Unknown, or another application's: the contract's bare `{}`.
                None => Json(json!({})).into_response(),
            }
        }
        TasksRequest::RetrieveBatch { ids } => {
            let items = state
                .tasks
                .retrieve_batch(&caller.application_id, &ids)
                .await
                .map_err(internal)?;
            Json(TaskBatch::new(items)).into_response()
        }
    };
    Ok(answer)
}
