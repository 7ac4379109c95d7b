//! One request to the fake OpenAI images API: routing, reading the JSON or multipart body into a
//! [`RecordedRequest`], the checks OpenAI makes first, then the scripted outcome's answer. Not
//! here: the options and the server (`mod.rs`).
//! Imports nothing of the crate outside `fake`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::common::{MAX_SIDE, lock, parse_size, retry_after_seconds, stopped, unix_now};
use super::{RecordedPart, RecordedRequest, Scenario, Shared, scenario_from_prompt};

type Handled = Result<Response, Response>;

pub(super) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.calls.received();
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    if method == Method::GET
        && let Some(file) = path.strip_prefix("/files/")
    {
        return serve_file(&shared, file);
    }
    let endpoint = if path.ends_with("/images/generations") {
        Endpoint::Generations
    } else if path.ends_with("/images/edits") {
        Endpoint::Edits
    } else {
        return error(
            404,
            &format!("Invalid URL ({method} {path})"),
            "invalid_request_error",
            None,
        );
    };
    if method != Method::POST {
        return error(405, "Use POST.", "invalid_request_error", None);
    }
    let headers = request.headers().clone();
    let mut recorded = RecordedRequest {
        method: method.to_string(),
        path,
        authorization: header_text(&headers, header::AUTHORIZATION.as_str()),
        organization: header_text(&headers, "openai-organization"),
        content_type: header_text(&headers, header::CONTENT_TYPE.as_str()),
        ..RecordedRequest::default()
    };
    let read = match endpoint {
        Endpoint::Generations => read_json(request, &mut recorded).await,
        Endpoint::Edits => read_multipart(request, &mut recorded).await,
    };
    shared.calls.record(recorded.clone());
    if let Err(answer) = read {
        return answer;
    }
    match answer(&shared, endpoint, &recorded).await {
        Ok(answer) | Err(answer) => answer,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Generations,
    Edits,
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn read_json(request: Request, recorded: &mut RecordedRequest) -> Result<(), Response> {
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .map_err(|e| {
            error(
                400,
                &format!("could not read the body: {e}"),
                "invalid_request_error",
                None,
            )
        })?;
    let json: Value = serde_json::from_slice(&body).map_err(|_| {
        error(
            400,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
        )
    })?;
    let Value::Object(fields) = json else {
        return Err(error(
            400,
            "The body must be a JSON object.",
            "invalid_request_error",
            None,
        ));
    };
    let text = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_owned);
    recorded.model = text("model");
    recorded.prompt = text("prompt");
    recorded.size = text("size");
    recorded.quality = text("quality");
    recorded.response_format = text("response_format");
    recorded.output_format = text("output_format");
    recorded.n = fields
        .get("n")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok());
    recorded.fields = fields.keys().cloned().collect();
    Ok(())
}

async fn read_multipart(request: Request, recorded: &mut RecordedRequest) -> Result<(), Response> {
    let bad = |message: String| error(400, &message, "invalid_request_error", None);
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| bad(format!("The body must be multipart/form-data: {e}")))?;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad(format!("The multipart body could not be read: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(str::to_owned);
        let bytes = field
            .bytes()
            .await
            .map_err(|e| bad(format!("A part could not be read: {e}")))?;
        if filename.is_some() {
            recorded.files.push(RecordedPart {
                name,
                filename,
                content_type,
                bytes,
            });
            continue;
        }
        let value = String::from_utf8_lossy(&bytes).into_owned();
        match name.as_str() {
            "model" => recorded.model = Some(value),
            "prompt" => recorded.prompt = Some(value),
            "size" => recorded.size = Some(value),
            "quality" => recorded.quality = Some(value),
            "response_format" => recorded.response_format = Some(value),
            "output_format" => recorded.output_format = Some(value),
            "n" => recorded.n = value.trim().parse().ok(),
            _ => {}
        }
        recorded.fields.push(name);
    }
    Ok(())
}

/// What each model takes, by name (as `providers::openai::wire` decides it; the fake keeps its own
/// copy so that it checks the provider rather than agreeing with it by construction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    GptImage1,
    GptImage2,
    Other,
}

fn family(model: &str) -> Family {
    if model.starts_with("gpt-image-2") {
        Family::GptImage2
    } else if model.starts_with("gpt-image-") || model.starts_with("chatgpt-image") {
        Family::GptImage1
    } else {
        Family::Other
    }
}

/// The pixel size a model makes for `size`, or OpenAI's complaint.
fn checked_size(family: Family, size: Option<&str>) -> Result<(u32, u32), String> {
    let size = size.unwrap_or("auto");
    if size == "auto" {
        return Ok((1024, 1024));
    }
    let parsed = parse_size(size);
    let invalid = || {
        format!(
            "Invalid value: '{size}'. Supported values are: '1024x1024', '1024x1536', \
             '1536x1024', and 'auto'."
        )
    };
    match family {
        Family::GptImage1 => match parsed {
            Some(s @ ((1024, 1024) | (1536, 1024) | (1024, 1536))) => Ok(s),
            _ => Err(invalid()),
        },
        Family::GptImage2 => {
            let (w, h) = parsed.ok_or_else(invalid)?;
            let pixels = u64::from(w) * u64::from(h);
            if w % 16 != 0 || h % 16 != 0 {
                Err(format!(
                    "Invalid size '{size}': both sides must be multiples of 16."
                ))
            } else if w > 3 * h || h > 3 * w {
                Err(format!(
                    "Invalid size '{size}': the aspect ratio must be between 1:3 and 3:1."
                ))
            } else if w.max(h) > 3840 || !(655_360..=3840 * 2160).contains(&pixels) {
                Err(format!(
                    "Invalid size '{size}': at most 3840 pixels a side and between 655,360 and \
                     8,294,400 pixels."
                ))
            } else {
                Ok((w, h))
            }
        }
        Family::Other => match parsed {
            Some((w, h)) if (1..=MAX_SIDE).contains(&w) && (1..=MAX_SIDE).contains(&h) => {
                Ok((w, h))
            }
            _ => Err(format!("Invalid size '{size}'.")),
        },
    }
}

/// The checks OpenAI makes before the model runs, then the outcome.
async fn answer(shared: &Shared, endpoint: Endpoint, request: &RecordedRequest) -> Handled {
    if let Some(key) = &shared.options.api_key
        && request.authorization.as_deref() != Some(&format!("Bearer {key}"))
    {
        return Err(error(
            401,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ));
    }
    let invalid =
        |message: &str, code: &str| error(400, message, "invalid_request_error", Some(code));
    let Some(model) = request.model.as_deref() else {
        return Err(invalid(
            "you must provide a model parameter",
            "missing_required_parameter",
        ));
    };
    let family = family(model);
    let Some(prompt) = request.prompt.as_deref().filter(|p| !p.is_empty()) else {
        return Err(invalid(
            "Missing required parameter: 'prompt'.",
            "missing_required_parameter",
        ));
    };
    if family != Family::Other && request.response_format.is_some() {
        return Err(invalid(
            "Unknown parameter: 'response_format'.",
            "unknown_parameter",
        ));
    }
    if family != Family::Other
        && let Some(quality) = &request.quality
        && !["low", "medium", "high", "auto"].contains(&quality.as_str())
    {
        return Err(invalid(
            &format!(
                "Invalid value: '{quality}'. Supported values are: 'low', 'medium', 'high', and 'auto'."
            ),
            "invalid_value",
        ));
    }
    let n = request.n.unwrap_or(1);
    if !(1..=10).contains(&n) {
        return Err(invalid("n must be between 1 and 10.", "invalid_value"));
    }
    let (width, height) =
        checked_size(family, request.size.as_deref()).map_err(|m| invalid(&m, "invalid_value"))?;
    if endpoint == Endpoint::Edits && request.image_parts().is_empty() {
        return Err(invalid(
            "Missing required parameter: 'image'.",
            "missing_required_parameter",
        ));
    }

    let queued = shared.calls.next_scenario();
    let scenario = queued.unwrap_or_else(|| scenario_from_prompt(prompt));
    let ran = matches!(
        scenario,
        Scenario::Success | Scenario::Url | Scenario::Moderation | Scenario::Garbage
    );
    if ran && !shared.options.latency.is_zero() {
        tokio::time::sleep(shared.options.latency).await;
    }
    let wants_url = scenario == Scenario::Url
        || (family == Family::Other && request.response_format.as_deref() == Some("url"));
    match scenario {
        Scenario::Success | Scenario::Url => {
            image_answer(shared, width, height, n, wants_url, request).await
        }
        Scenario::Moderation => Err(moderation_blocked()),
        Scenario::RateLimited { retry_after } => Err(rate_limited(model, retry_after)),
        Scenario::InsufficientQuota => Err(error(
            429,
            "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "insufficient_quota",
            Some("insufficient_quota"),
        )),
        Scenario::ServerError => Err(error(
            500,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        )),
        Scenario::Status(status) if (200..300).contains(&status) => {
            image_answer(shared, width, height, n, wants_url, request).await
        }
        Scenario::Status(status) => Err(error(
            status,
            "The fake was told to fail.",
            "server_error",
            None,
        )),
        Scenario::Hang => {
            stopped(shared.shutdown.clone()).await;
            Err(error(
                503,
                "The fake is shutting down.",
                "server_error",
                None,
            ))
        }
        Scenario::Garbage => Ok((
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            r#"{"created": 1, "data": [{"b64_json": "iVBORw0KGgo"#,
        )
            .into_response()),
    }
}

async fn image_answer(
    shared: &Shared,
    width: u32,
    height: u32,
    n: u32,
    as_url: bool,
    request: &RecordedRequest,
) -> Handled {
    let png = shared
        .images
        .get(width, height)
        .await
        .map_err(|m| error(500, &m, "server_error", None))?;
    let entry = if as_url {
        let mut files = lock(&shared.files);
        files.push(png.bytes.clone());
        let url = format!("{}/files/{}.png", lock(&shared.origin), files.len() - 1);
        json!({ "url": url })
    } else {
        json!({ "b64_json": png.base64 })
    };
    let data: Vec<Value> = (0..n).map(|_| entry.clone()).collect();
    let body = json!({
        "created": unix_now(),
        "data": data,
        "background": "opaque",
        "output_format": request.output_format.as_deref().unwrap_or("png"),
        "size": format!("{width}x{height}"),
        "quality": request.quality.as_deref().filter(|q| *q != "auto").unwrap_or("medium"),
        "usage": {
            "input_tokens": 50, "output_tokens": 1056, "total_tokens": 1106,
            "input_tokens_details": {"text_tokens": 50, "image_tokens": 0}
        }
    });
    Ok(json_response(200, &body, &[]))
}

fn serve_file(shared: &Shared, file: &str) -> Response {
    let index = file
        .strip_suffix(".png")
        .and_then(|n| n.parse::<usize>().ok());
    match index.and_then(|i| lock(&shared.files).get(i).cloned()) {
        Some(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("image/png"))],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

fn moderation_blocked() -> Response {
    let body = json!({"error": {
        "message": "Your request was rejected as a result of our safety system. Your request may contain content that is not allowed by our safety system.",
        "type": "image_generation_user_error",
        "param": null,
        "code": "moderation_blocked",
        "moderation_details": {"moderation_stage": "input", "categories": ["violence"]}
    }});
    json_response(400, &body, &[])
}

fn rate_limited(model: &str, retry_after: Duration) -> Response {
    let body = json!({"error": {
        "message": format!("Rate limit reached for {model} in organization org-fake on images per minute (IPM): Limit 5, Used 5, Requested 1. Please try again in {}s.", retry_after.as_secs_f64()),
        "type": "requests",
        "param": null,
        "code": "rate_limit_exceeded"
    }});
    let millis = retry_after.as_millis().to_string();
    json_response(
        429,
        &body,
        &[
            ("retry-after-ms", millis),
            ("retry-after", retry_after_seconds(retry_after)),
        ],
    )
}

fn error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    json_response(status, &body, &[])
}

fn json_response(status: u16, body: &Value, headers: &[(&'static str, String)]) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response();
    response
        .headers_mut()
        .insert("x-request-id", HeaderValue::from_static("req_fake"));
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_per_model() {
        assert_eq!(checked_size(Family::GptImage1, None), Ok((1024, 1024)));
        assert_eq!(
            checked_size(Family::GptImage1, Some("1536x1024")),
            Ok((1536, 1024))
        );
        assert!(checked_size(Family::GptImage1, Some("1376x768")).is_err());
        assert_eq!(
            checked_size(Family::GptImage2, Some("3840x2144")),
            Ok((3840, 2144))
        );
        assert!(
            checked_size(Family::GptImage2, Some("1000x1000")).is_err(),
            "not ×16"
        );
        assert!(
            checked_size(Family::GptImage2, Some("3840x2176")).is_err(),
            "too many pixels"
        );
        assert!(
            checked_size(Family::GptImage2, Some("3840x1024")).is_err(),
            "ratio"
        );
        assert!(
            checked_size(Family::GptImage2, Some("512x512")).is_err(),
            "too few pixels"
        );
        assert_eq!(checked_size(Family::Other, Some("256x256")), Ok((256, 256)));
        assert!(checked_size(Family::Other, Some("big")).is_err());
    }
}
