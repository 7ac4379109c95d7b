//! `GET /images/{key}`: stored images, streamed from the image store (a local folder or S3;
//! never buffered whole). Keys are unguessable, so
//! image URLs work without a token, as clients of the original service expect.

use axum::{
    Extension,
    body::Body,
    extract::{Path, State},
    http::header,
    response::{IntoResponse, Response},
};

use super::{AppState, HttpError, TraceId};
use crate::{
    api::{ApiError, ErrorCode},
    storage::images::{IMMUTABLE, StoreError},
};

pub async fn get(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Path(key): Path<String>,
) -> Result<Response, HttpError> {
    match state.images.get(&key).await {
        Ok(image) => Ok((
            [
                (header::CONTENT_TYPE, image.content_type.to_owned()),
                (header::CONTENT_LENGTH, image.size.to_string()),
                // A key is never reused for other bytes.
                (header::CACHE_CONTROL, IMMUTABLE.to_owned()),
            ],
            Body::from_stream(image.body),
        )
            .into_response()),
        Err(StoreError::NotFound | StoreError::InvalidKey) => Err(HttpError::code(
            &trace_id,
            ErrorCode::NoApi,
            "No image with that name.",
        )),
        Err(e) => {
            tracing::error!(error = %e, trace_id = %trace_id, "could not read a stored image");
            Err(HttpError::new(&trace_id, ApiError::internal()))
        }
    }
}
