//! OpenAI's images API over HTTP: `POST /v1/images/generations`, `POST /v1/images/edits`
//! (multipart or JSON), `GET /v1/models[/{id}]`, and the original service's `POST
//! /openai/images/generations` and `/openai/images/edits`, which add `callback_url` and `async`
//! and answer errors in the contract's shape. Bodies are translated by `crate::dialects::openai`;
//! here: reading multipart bodies (each file checked against the size limit as it arrives), the
//! shared admission, reading the made images back for `b64_json`, and Server-Sent Events.

use std::{convert::Infallible, time::Duration};

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{FromRequest, Multipart, Path, Request, State, multipart::Field},
    http::{HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::stream;
use serde_json::{Map, Value};

use super::{
    AppState, TraceId,
    auth::Authenticated,
    dialect::{Contract, Dialect, OpenAi},
    submit,
};
use crate::{
    accounts::Caller,
    api::{self, ApiError, ErrorCode},
    dialects::{
        Context,
        openai::{self, Answering, Form, Made, Operation, Uploads},
    },
    storage::ImageStore,
    tasks::TaskResult,
};

/// How often a streamed request that is still waiting sends a comment, so proxies that cut idle
/// connections do not cut a 4K generation.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn v1_generations(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Authenticated { caller, .. }: Authenticated<OpenAi>,
    request: Request,
) -> Response {
    images::<OpenAi>(
        state,
        trace_id,
        caller,
        Operation::Generations,
        Form::OpenAi,
        request,
    )
    .await
}

pub async fn v1_edits(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Authenticated { caller, .. }: Authenticated<OpenAi>,
    request: Request,
) -> Response {
    images::<OpenAi>(
        state,
        trace_id,
        caller,
        Operation::Edits,
        Form::OpenAi,
        request,
    )
    .await
}

pub async fn original_generations(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Authenticated { caller, .. }: Authenticated,
    request: Request,
) -> Response {
    let operation = Operation::Generations;
    images::<Contract>(state, trace_id, caller, operation, Form::Original, request).await
}

pub async fn original_edits(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Authenticated { caller, .. }: Authenticated,
    request: Request,
) -> Response {
    images::<Contract>(
        state,
        trace_id,
        caller,
        Operation::Edits,
        Form::Original,
        request,
    )
    .await
}

/// `GET /v1/models`: the models offered here, by our names and by their upstream ids.
pub async fn models(
    State(state): State<AppState>,
    Authenticated { .. }: Authenticated<OpenAi>,
) -> Json<Value> {
    let names = state.tasks.model_names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    Json(openai::model_list(&names))
}

/// `GET /v1/models/{id}`.
pub async fn model(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    Authenticated { .. }: Authenticated<OpenAi>,
    Path(id): Path<String>,
) -> Response {
    if state.tasks.model_names().contains(&id) {
        return Json(openai::model_entry(&id)).into_response();
    }
    let error = ApiError::new(
        ErrorCode::ApiNotImplemented,
        format!("The model {id:?} does not exist here."),
    );
    OpenAi::error(&trace_id, &error, Some("model"))
}

async fn images<D: Dialect>(
    state: AppState,
    trace_id: String,
    caller: Caller,
    operation: Operation,
    form: Form,
    request: Request,
) -> Response {
    // Limits come before any work or reservation.
    let decision = match submit::rate_limit(&state, &caller).await {
        Ok(decision) => decision,
        Err(error) => return D::error(&trace_id, &error, None),
    };
    let mut response = match answer::<D>(state, &trace_id, caller, operation, form, request).await {
        Ok(response) | Err(response) => response,
    };
    submit::report(&mut response, decision);
    response
}

async fn answer<D: Dialect>(
    state: AppState,
    trace_id: &str,
    caller: Caller,
    operation: Operation,
    form: Form,
    request: Request,
) -> Result<Response, Response> {
    let fail = |error: ApiError| D::error(trace_id, &error, None);
    let headers = request.headers().clone();
    let (fields, uploads) = read_body(&state, operation, request).await.map_err(fail)?;
    let model_names = state.tasks.model_names();
    let context = Context {
        limits: &state.limits,
        max_image_bytes: state.max_image_bytes,
        model_named: &|name| state.tasks.model_named(name),
        model_names: &model_names,
    };
    let mut parsed = openai::parse(operation, form, &fields, uploads, &context)
        .map_err(|invalid| D::error(trace_id, &invalid.error(), invalid.param.as_deref()))?;
    drop(fields);
    let submitted = submit::submit(&state, trace_id, &caller, &headers, &mut parsed.translated)
        .await
        .map_err(fail)?;
    if parsed.translated.request.answers_at_once() {
        let accepted = api::accepted_body(&submitted.task_id, trace_id);
        return Ok(Json(accepted).into_response());
    }
    // A waiting request keeps only what shapes its answer, not the request (and its uploads).
    let answering = parsed.answering;
    drop((parsed.translated, headers, caller));
    if answering.stream {
        return Ok(stream(state, submitted, answering));
    }
    let result = state.tasks.wait(submitted).await;
    if form == Form::Original && result.status != 200 {
        // The contract's answer to a failed task is its final body, `task_id` included, as
        // `/nano-banana/images` answers it: the client can find the task.
        let status =
            StatusCode::from_u16(result.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err((status, Json(result.body)).into_response());
    }
    let made = made_images(&state.images, &result, answering.needs_bytes())
        .await
        .map_err(fail)?;
    Ok(Json(openai::answer(&answering, created(), &made)).into_response())
}

/// The request's fields and files: a JSON body, or for edits a multipart one.
async fn read_body(
    state: &AppState,
    operation: Operation,
    request: Request,
) -> Result<(Map<String, Value>, Uploads), ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") && operation == Operation::Edits {
        let multipart = Multipart::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("The multipart body is not valid: {e}.")))?;
        return read_multipart(multipart, state.max_image_bytes).await;
    }
    if !content_type.starts_with("application/json") {
        let accepted = match operation {
            Operation::Generations => "application/json",
            Operation::Edits => "multipart/form-data or application/json",
        };
        return Err(ApiError::bad_request(format!(
            "Content-Type {content_type:?} is not accepted here: send {accepted}."
        )));
    }
    let body = Bytes::from_request(request, state).await;
    match submit::json_body(body)? {
        Value::Object(fields) => Ok((fields, Uploads::default())),
        _ => Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        )),
    }
}

/// A multipart edit: `image` / `image[]` and `mask` files, every other part a text field.
async fn read_multipart(
    mut multipart: Multipart,
    max_image_bytes: usize,
) -> Result<(Map<String, Value>, Uploads), ApiError> {
    let broken = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::RequestTooLarge, "The request body is too large.")
        } else {
            ApiError::bad_request(format!("The multipart body could not be read: {e}."))
        }
    };
    let mut fields = Map::new();
    let mut uploads = Uploads::default();
    while let Some(field) = multipart.next_field().await.map_err(broken)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "image" | "image[]" => {
                let label = format!("image[{}]", uploads.images.len());
                uploads
                    .images
                    .push(read_file(field, &label, max_image_bytes).await?);
            }
            "mask" => uploads.mask = Some(read_file(field, "mask", max_image_bytes).await?),
            _ if field.file_name().is_some() => {
                return Err(ApiError::bad_request(format!(
                    "{name} cannot be a file: only image, image[] and mask can."
                )));
            }
            _ => {
                let text = field.text().await.map_err(broken)?;
                fields.insert(name, Value::String(text));
            }
        }
    }
    Ok((fields, uploads))
}

/// One uploaded file, refused as soon as it passes the size limit rather than once all of it
/// has been read.
async fn read_file(
    mut field: Field<'_>,
    label: &str,
    max_image_bytes: usize,
) -> Result<Bytes, ApiError> {
    let mut bytes = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > max_image_bytes {
                    return Err(ApiError::new(
                        ErrorCode::RequestTooLarge,
                        format!(
                            "{label} is too large: at most {} MB is allowed.",
                            max_image_bytes / (1024 * 1024)
                        ),
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Bytes::from(bytes)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::new(
                    ErrorCode::RequestTooLarge,
                    "The request body is too large.",
                ));
            }
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "{label} could not be read: {e}."
                )));
            }
        }
    }
}

/// The images of a finished task, read back from the store when the answer carries them; a
/// failed task's contract error.
pub async fn made_images(
    images: &ImageStore,
    result: &TaskResult,
    with_bytes: bool,
) -> Result<Vec<Made>, ApiError> {
    if result.status != 200 {
        return Err(submit::failure(&result.body));
    }
    let urls: Vec<String> = result.body["data"]
        .as_array()
        .map(|data| {
            data.iter()
                .filter_map(|entry| entry["image_url"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut made = Vec::with_capacity(urls.len());
    for url in urls {
        let bytes = match with_bytes {
            true => Some(read_image(images, &url).await?.0),
            false => None,
        };
        made.push(Made { url, bytes });
    }
    Ok(made)
}

/// One stored image by its URL, with its content type.
pub async fn read_image(images: &ImageStore, url: &str) -> Result<(Bytes, &'static str), ApiError> {
    let key = ImageStore::key_in_url(url).ok_or_else(|| {
        tracing::error!(url, "an image URL of ours has no key");
        ApiError::internal()
    })?;
    images.read(&key).await.map_err(|e| {
        tracing::error!(error = %e, key, "could not read a made image back");
        ApiError::new(ErrorCode::ApiError, "The image could not be read back.")
    })
}

/// The answer of `stream: true`: Server-Sent Events in OpenAI's names, one `…completed` event
/// per image once the task ends (Gemini makes no partial images), comments while it runs.
fn stream(state: AppState, submitted: crate::tasks::Submitted, answering: Answering) -> Response {
    let events = stream::once(async move {
        let result = state.tasks.wait(submitted).await;
        let events: Vec<Value> = match made_images(&state.images, &result, true).await {
            Ok(made) => openai::stream_events(&answering, created(), &made),
            Err(error) => vec![openai::stream_error(&error)],
        };
        stream::iter(events.into_iter().map(|event| {
            let name = event["type"].as_str().unwrap_or("error").to_owned();
            Ok::<_, Infallible>(Event::default().event(name).data(event.to_string()))
        }))
    });
    let events = futures_util::StreamExt::flatten(events);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Proxies (nginx) buffer responses unless told not to.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn created() -> i64 {
    crate::domain::now_ms() / 1000
}
