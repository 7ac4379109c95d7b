//! Google's Gemini API over HTTP: `POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent` (also under `/v1/`, which the `google-genai` SDK uses by default).
//! The key comes as `x-goog-api-key`, `?key=` or a Bearer token, and is one of our tokens.
//! Bodies are translated by `crate::dialects::gemini`.
//!
//! A stream (`?alt=sse`) is one final `data:` event once the image is made: image models make no
//! partial output, and Google's SDK refuses comments in the stream, so nothing is sent while the
//! task runs. Without `alt=sse` the stream is a JSON array of that one response, as Google's is.

use axum::{
    Extension, Json,
    body::{Body, Bytes},
    extract::{
        Path, Query, State,
        rejection::{BytesRejection, QueryRejection},
    },
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde_json::Value;

use super::{
    AppState, TraceId,
    auth::Authenticated,
    dialect::{Dialect, Gemini},
    openai::read_image,
    submit,
};
use crate::{
    accounts::Caller,
    api::{ApiError, ErrorCode},
    dialects::{
        Context,
        gemini::{self, GeminiRequest, Made},
    },
    tasks::TaskResult,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Generate,
    /// `:streamGenerateContent`; `sse`: `?alt=sse`.
    Stream {
        sse: bool,
    },
}

#[derive(serde::Deserialize)]
pub struct StreamQuery {
    alt: Option<String>,
}

/// `POST …/models/{model}:{method}`.
pub async fn generate(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Authenticated { caller, .. }: Authenticated<Gemini>,
    Path(target): Path<String>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // axum's own rejection (e.g. `alt` given twice) is plain text: say it in Google's format.
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => {
            let error = ApiError::bad_request(format!("Invalid query: {}.", e.body_text()));
            return Gemini::error(&trace_id, &error, None);
        }
    };
    let method = match target.rsplit_once(':') {
        Some((_, "generateContent")) => Method::Generate,
        Some((_, "streamGenerateContent")) => Method::Stream {
            sse: query.alt.as_deref() == Some("sse"),
        },
        _ => {
            let error = ApiError::new(
                ErrorCode::NoApi,
                format!(
                    "models/{target} is not a method: use :generateContent or :streamGenerateContent."
                ),
            );
            return Gemini::error(&trace_id, &error, None);
        }
    };
    let model_id = target
        .rsplit_once(':')
        .map_or(target.as_str(), |(model, _)| model)
        .to_owned();
    let decision = match submit::rate_limit(&state, &caller).await {
        Ok(decision) => decision,
        Err(error) => return Gemini::error(&trace_id, &error, None),
    };
    let answered = answer(state, &trace_id, caller, &model_id, method, headers, body).await;
    let mut response = match answered {
        Ok(response) => response,
        Err(error) => Gemini::error(&trace_id, &error, None),
    };
    submit::report(&mut response, decision);
    response
}

async fn answer(
    state: AppState,
    trace_id: &str,
    caller: Caller,
    model_id: &str,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(ApiError::bad_request(format!(
            "Content-Type {content_type:?} is not accepted here: send application/json."
        )));
    }
    let body = submit::json_body(body)?;
    if state.tasks.model_named(model_id).is_none() {
        // Google's answer for a model it does not have.
        return Err(ApiError::new(
            ErrorCode::NoApi,
            format!(
                "models/{model_id} is not found here, or is not supported for generateContent: \
                 use one of {}.",
                state.tasks.model_names().join(", ")
            ),
        ));
    }
    let model_names = state.tasks.model_names();
    let context = Context {
        limits: &state.limits,
        max_image_bytes: state.max_image_bytes,
        model_named: &|name| state.tasks.model_named(name),
        model_names: &model_names,
    };
    let mut parsed = gemini::parse(model_id, &body, &context).map_err(|invalid| invalid.error())?;
    drop(body);
    let submitted =
        submit::submit(&state, trace_id, &caller, &headers, &mut parsed.translated).await?;
    let response_id = submitted.task_id.clone();
    let GeminiRequest {
        translated,
        model_version,
    } = parsed;
    drop((translated, headers, caller));
    let result = state.tasks.wait(submitted).await;
    let answer = finished(&state, &result, &model_version, &response_id).await?;
    Ok(match method {
        Method::Generate => Json(answer).into_response(),
        Method::Stream { sse: true } => {
            // Google's framing, which its SDK insists on: `data: ` and the JSON, then a blank line.
            let event = format!("data: {answer}\r\n\r\n");
            let mut response = Body::from(event).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            response
        }
        Method::Stream { sse: false } => Json(Value::Array(vec![answer])).into_response(),
    })
}

/// The `GenerateContentResponse` of a finished task: its image, or Google's safety refusal; any
/// other failure is the contract error it holds.
async fn finished(
    state: &AppState,
    result: &TaskResult,
    model_version: &str,
    response_id: &str,
) -> Result<Value, ApiError> {
    if result.status != 200 {
        let error = submit::failure(&result.body);
        if error.code == ErrorCode::Forbidden {
            return Ok(gemini::refused(model_version, response_id));
        }
        return Err(error);
    }
    let mut made = Vec::new();
    if let Some(data) = result.body["data"].as_array() {
        for entry in data {
            let Some(url) = entry["image_url"].as_str() else {
                continue;
            };
            let (bytes, mime_type) = read_image(&state.images, url).await?;
            made.push(Made {
                mime_type: mime_type.to_owned(),
                bytes,
            });
        }
    }
    Ok(gemini::answer(model_version, response_id, &made))
}
