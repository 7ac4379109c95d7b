//! Google's Gemini API: `POST /v1beta/models/{model}:generateContent` (and `/v1/`, the
//! `google-genai` SDK's default, and `:streamGenerateContent?alt=sse`). A request becomes a
//! contract request — the prompt from the last user turn's text, the input images from every
//! turn's `inlineData` and `fileData` parts, the ratio and size from
//! `generationConfig.imageConfig` — and a finished image becomes a `GenerateContentResponse` with
//! the image as an `inlineData` part. A safety refusal answers as Google does: 200, no image,
//! `finishReason: IMAGE_SAFETY`. Errors are `{"error": {"code", "message", "status"}}`.
//!
//! Keys are read in both spellings protobuf's JSON accepts (`inlineData` and `inline_data`,
//! `mimeType` and `mime_type`), and base64 in both alphabets (the SDK sends URL-safe).

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{Context, Invalid, Translated, validated};
use crate::{
    api::{ApiError, ErrorCode},
    domain::{AspectRatio, MAX_IMAGE_URLS, Resolution},
};

/// A valid `generateContent` request.
#[derive(Debug, Clone)]
pub struct GeminiRequest {
    pub translated: Translated,
    /// The model id as the client named it: the answer's `modelVersion`.
    pub model_version: String,
}

/// Reads a `generateContent` body for the model named in the path.
pub fn parse(
    model_id: &str,
    body: &Value,
    context: &Context<'_>,
) -> Result<GeminiRequest, Invalid> {
    let Some(object) = body.as_object() else {
        return Err(Invalid::new("", "The request body must be a JSON object."));
    };
    let model =
        (context.model_named)(model_id).ok_or_else(|| context.unknown_model("model", model_id))?;

    let config = either(object, "generationConfig", "generation_config").and_then(Value::as_object);
    if let Some(config) = config {
        if either(config, "candidateCount", "candidate_count")
            .and_then(Value::as_u64)
            .is_some_and(|n| n > 1)
        {
            // Google's own answer for image models.
            return Err(Invalid::new(
                "generationConfig.candidateCount",
                format!("Multiple candidates is not enabled for models/{model_id}"),
            ));
        }
        if let Some(modalities) =
            either(config, "responseModalities", "response_modalities").and_then(Value::as_array)
            && !modalities
                .iter()
                .any(|m| m.as_str().is_some_and(|m| m.eq_ignore_ascii_case("image")))
        {
            return Err(Invalid::new(
                "generationConfig.responseModalities",
                "This server makes images: responseModalities must include IMAGE.",
            ));
        }
    }
    let image_config = config
        .and_then(|c| either(c, "imageConfig", "image_config"))
        .and_then(Value::as_object);
    let aspect_ratio = match image_config.and_then(|c| either(c, "aspectRatio", "aspect_ratio")) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(AspectRatio::parse(text).ok_or_else(|| {
            Invalid::new(
                "generationConfig.imageConfig.aspectRatio",
                format!(
                    "aspectRatio {text:?} is not supported here: use one of 1:1, 3:2, 2:3, 16:9, \
                     9:16, 4:3, 3:4."
                ),
            )
        })?),
        Some(_) => {
            return Err(Invalid::new(
                "generationConfig.imageConfig.aspectRatio",
                "aspectRatio must be a string.",
            ));
        }
    };
    let resolution = match image_config.and_then(|c| either(c, "imageSize", "image_size")) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(
            Resolution::parse(&text.to_ascii_uppercase()).ok_or_else(|| {
                Invalid::new(
                    "generationConfig.imageConfig.imageSize",
                    format!("imageSize {text:?} is not supported here: use 1K, 2K or 4K."),
                )
            })?,
        ),
        Some(_) => {
            return Err(Invalid::new(
                "generationConfig.imageConfig.imageSize",
                "imageSize must be a string.",
            ));
        }
    };

    let (prompt, images) = read_contents(object)?;
    if images.len() > MAX_IMAGE_URLS {
        return Err(Invalid::new(
            "contents",
            format!(
                "{} images were sent: at most {MAX_IMAGE_URLS} are allowed.",
                images.len()
            ),
        ));
    }

    let mut body = Map::new();
    let edit = !images.is_empty();
    body.insert(
        "action".into(),
        if edit { "edit" } else { "generate" }.into(),
    );
    body.insert("prompt".into(), prompt.into());
    body.insert("model".into(), model.name().into());
    if let Some(ratio) = aspect_ratio {
        body.insert("aspect_ratio".into(), ratio.as_str().into());
    }
    if let Some(resolution) = resolution {
        body.insert("resolution".into(), resolution.as_str().into());
    }
    if edit {
        body.insert("image_urls".into(), images.into());
    }
    body.insert("via".into(), "generateContent".into());
    let translated = validated(Value::Object(body), context.limits)?;
    Ok(GeminiRequest {
        translated,
        model_version: model_id.to_owned(),
    })
}

/// The prompt (the system instruction's text, then the last user turn's) and the input images of
/// every turn, oldest first: a conversation that edits an image sends it back in a `model` turn.
fn read_contents(object: &Map<String, Value>) -> Result<(String, Vec<String>), Invalid> {
    let contents: Vec<&Value> = match object.get("contents") {
        Some(Value::Array(turns)) => turns.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => return Err(Invalid::new("contents", "contents is required.")),
    };
    let mut images = Vec::new();
    let mut prompt = Vec::new();
    for (i, turn) in contents.iter().enumerate() {
        let parts = turn
            .get("parts")
            .and_then(Value::as_array)
            .ok_or_else(|| Invalid::new(format!("contents[{i}].parts"), "parts is required."))?;
        let from_user = turn
            .get("role")
            .and_then(Value::as_str)
            .is_none_or(|r| r == "user");
        let mut texts = Vec::new();
        for (j, part) in parts.iter().enumerate() {
            let param = || format!("contents[{i}].parts[{j}]");
            if let Some(text) = part.get("text").and_then(Value::as_str) {
                // Thoughts are the model's, not the prompt.
                if part.get("thought").and_then(Value::as_bool) != Some(true) {
                    texts.push(text.to_owned());
                }
            } else if let Some(inline) = either_object(part, "inlineData", "inline_data") {
                images.push(inline_data_uri(inline).ok_or_else(|| {
                    Invalid::new(param(), "inlineData needs mimeType and base64 data.")
                })?);
            } else if let Some(file) = either_object(part, "fileData", "file_data") {
                let uri = either(file, "fileUri", "file_uri")
                    .and_then(Value::as_str)
                    .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                    .ok_or_else(|| {
                        Invalid::new(param(), "fileData.fileUri must be an http(s) URL here.")
                    })?;
                images.push(uri.to_owned());
            }
        }
        if from_user && !texts.is_empty() {
            prompt = texts;
        }
    }
    let system = either_object_value(object, "systemInstruction", "system_instruction")
        .and_then(|s| s.get("parts"))
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|s| !s.trim().is_empty());
    let prompt = prompt.join("\n");
    if prompt.trim().is_empty() {
        return Err(Invalid::new(
            "contents",
            "contents must hold a user turn with a text part: the prompt.",
        ));
    }
    let prompt = match system {
        Some(system) => format!("{system}\n\n{prompt}"),
        None => prompt,
    };
    Ok((prompt, images))
}

/// `data:<mime>;base64,<standard base64>` from an `inlineData` object.
fn inline_data_uri(inline: &Map<String, Value>) -> Option<String> {
    let mime = either(inline, "mimeType", "mime_type").and_then(Value::as_str)?;
    let data = inline.get("data").and_then(Value::as_str)?;
    if mime.is_empty() || data.is_empty() {
        return None;
    }
    // The SDK sends the URL-safe alphabet; data: URIs use the standard one.
    let standard: String = data
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    Some(format!("data:{mime};base64,{standard}"))
}

fn either<'a>(object: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    object.get(camel).or_else(|| object.get(snake))
}

fn either_object<'a>(part: &'a Value, camel: &str, snake: &str) -> Option<&'a Map<String, Value>> {
    part.get(camel).or_else(|| part.get(snake))?.as_object()
}

fn either_object_value<'a>(
    object: &'a Map<String, Value>,
    camel: &str,
    snake: &str,
) -> Option<&'a Value> {
    either(object, camel, snake).filter(|v| v.is_object())
}

/// One made image: its MIME type and bytes.
#[derive(Debug, Clone)]
pub struct Made {
    pub mime_type: String,
    pub bytes: Bytes,
}

/// The answer to a finished request: one candidate holding the images as `inlineData` parts.
pub fn answer(model_version: &str, response_id: &str, images: &[Made]) -> Value {
    use base64::Engine as _;
    let parts: Vec<Value> = images
        .iter()
        .map(|image| {
            json!({"inlineData": {
                "mimeType": image.mime_type,
                "data": base64::engine::general_purpose::STANDARD.encode(&image.bytes),
            }})
        })
        .collect();
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": parts},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": usage(),
        "modelVersion": model_version,
        "responseId": response_id,
    })
}

/// The answer when the upstream's safety policy refused: no content, `IMAGE_SAFETY`.
pub fn refused(model_version: &str, response_id: &str) -> Value {
    json!({
        "candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}],
        "usageMetadata": usage(),
        "modelVersion": model_version,
        "responseId": response_id,
    })
}

/// The task does not keep token counts: every count is zero.
fn usage() -> Value {
    json!({"promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0})
}

/// The status and body of a contract error in Google's shape.
pub fn error_body(error: &ApiError) -> (u16, Value) {
    let (status, name) = match &error.code {
        ErrorCode::NoToken | ErrorCode::TokenMismatched | ErrorCode::Disabled => {
            (403, "PERMISSION_DENIED")
        }
        ErrorCode::InvalidToken
        | ErrorCode::TokenExpired
        | ErrorCode::BadRequest
        | ErrorCode::RequestTooLarge
        | ErrorCode::Forbidden => (400, "INVALID_ARGUMENT"),
        ErrorCode::ApiNotImplemented | ErrorCode::NoApi => (404, "NOT_FOUND"),
        ErrorCode::UsedUp | ErrorCode::TooManyRequests => (429, "RESOURCE_EXHAUSTED"),
        ErrorCode::ApiError | ErrorCode::Other(_) => (500, "INTERNAL"),
    };
    let body = json!({"error": {"code": status, "message": error.message, "status": name}});
    (status, body)
}

#[cfg(test)]
mod tests;
