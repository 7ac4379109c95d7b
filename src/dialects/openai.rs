//! OpenAI's Images API: `POST /v1/images/generations` (JSON), `POST /v1/images/edits`
//! (multipart or JSON), and the original service's own form of the same under `/openai/images/…`,
//! which adds `callback_url` and `async`. Requests become contract requests; finished images
//! become `{"created", "data": [{"b64_json" | "url"}], "size", "quality", "output_format", …}`;
//! contract errors become `{"error": {"message", "type", "param", "code"}}` with OpenAI's statuses.
//!
//! The choices where OpenAI's models and ours differ are documented in the README ("OpenAI
//! images API"): `size` picks the nearest of the contract's aspect ratios and a resolution by its
//! long side; `quality` is a preference; `background: transparent` is refused (Gemini makes no
//! alpha); `usage` counts are zero (Gemini bills per image, not per token).

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{Context, Invalid, Translated, data_uri, megabytes, sniff_mime, validated};
use crate::{
    api::{ApiError, ErrorCode},
    domain::{AspectRatio, MAX_IMAGE_URLS, Model, OutputFormat, Resolution},
};

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Generations,
    Edits,
}

impl Operation {
    /// The `type` prefix of this operation's stream events.
    fn event_prefix(self) -> &'static str {
        match self {
            Operation::Generations => "image_generation",
            Operation::Edits => "image_edit",
        }
    }
}

/// Which form of the API: OpenAI's own (`/v1/`), or the original service's (`/openai/`), which
/// also takes `callback_url` and `async` and answers errors in the contract's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    OpenAi,
    Original,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    B64Json,
    Url,
}

/// An edit's files as they came in a multipart body: `image` or `image[]` parts, and `mask`.
#[derive(Debug, Clone, Default)]
pub struct Uploads {
    pub images: Vec<Bytes>,
    pub mask: Option<Bytes>,
}

/// A valid OpenAI images request.
#[derive(Debug, Clone)]
pub struct OpenAiRequest {
    pub translated: Translated,
    pub answering: Answering,
}

/// How the answer to a request is shaped: all a waiting request keeps once its task exists.
#[derive(Debug, Clone)]
pub struct Answering {
    pub operation: Operation,
    pub response_format: ResponseFormat,
    pub stream: bool,
    /// What the answer's `quality` says.
    pub quality: &'static str,
    /// What the answer's `output_format` says: the one asked for, or PNG (what Gemini makes).
    pub output_format: OutputFormat,
    /// The pixel size the images will have, when the request decides it (an edit without a
    /// size follows its first image, which may be known only once fetched).
    pub size: Option<(u32, u32)>,
}

impl Answering {
    /// Whether the answer carries the images' bytes (`b64_json`, or any stream event).
    pub fn needs_bytes(&self) -> bool {
        self.stream || self.response_format == ResponseFormat::B64Json
    }
}

/// The resolution a requested pixel size needs, by its long side: up to 1,536 px is 1K (OpenAI's
/// own sizes, 1024x1024 to 1536x1024, are all of this class), up to 3,072 px 2K, up to 6,144 px
/// 4K; larger is more than any model makes.
pub fn resolution_for(width: u32, height: u32) -> Option<Resolution> {
    match width.max(height) {
        0..=1536 => Some(Resolution::R1K),
        1537..=3072 => Some(Resolution::R2K),
        3073..=6144 => Some(Resolution::R4K),
        _ => None,
    }
}

/// `WxH` (or `auto`: `None`).
fn parse_size(text: &str) -> Result<Option<(u32, u32)>, Invalid> {
    if text == "auto" {
        return Ok(None);
    }
    let bad = || {
        Invalid::new(
            "size",
            format!(
                "size {text:?} is not valid: use auto or WIDTHxHEIGHT, e.g. 1024x1024, \
                 1536x1024 or 1024x1536."
            ),
        )
    };
    let (w, h) = text.split_once('x').ok_or_else(bad)?;
    let w: u32 = w.parse().map_err(|_| bad())?;
    let h: u32 = h.parse().map_err(|_| bad())?;
    if w == 0 || h == 0 {
        return Err(bad());
    }
    Ok(Some((w, h)))
}

/// Reads OpenAI's request (`fields`: the JSON body, or a multipart body's text fields) and the
/// uploaded files of an edit.
pub fn parse(
    operation: Operation,
    form: Form,
    fields: &Map<String, Value>,
    uploads: Uploads,
    context: &Context<'_>,
) -> Result<OpenAiRequest, Invalid> {
    let prompt = match string(fields, "prompt")? {
        Some(p) if !p.trim().is_empty() => p.to_owned(),
        Some(_) => return Err(Invalid::new("prompt", "prompt must not be empty.")),
        None => return Err(Invalid::new("prompt", "prompt is required.")),
    };
    let model = match string(fields, "model")? {
        None => Model::default(),
        Some(name) => {
            (context.model_named)(name).ok_or_else(|| context.unknown_model("model", name))?
        }
    };
    let count = match integer(fields, "n")? {
        None => 1,
        Some(n @ 1..=4) => n,
        Some(_) => return Err(Invalid::new("n", "n must be an integer from 1 to 4.")),
    };
    let size = match string(fields, "size")? {
        None => None,
        Some(text) => parse_size(text)?,
    };
    // `quality` is a preference: `high` asks for 2K where the model offers it. DALL·E's
    // `standard` and `hd` answer as `medium` and `high`: the SDKs type the answer's `quality` as
    // low, medium, high, xhigh or max, and their strict validation refuses anything else.
    let (quality, prefers_2k) = match string(fields, "quality")? {
        None | Some("auto") | Some("medium") | Some("standard") => ("medium", false),
        Some("low") => ("low", false),
        Some("high" | "hd") => ("high", true),
        Some(other) => {
            return Err(Invalid::new(
                "quality",
                format!(
                    "quality {other:?} is not valid: use auto, low, medium, high, standard or hd."
                ),
            ));
        }
    };
    match string(fields, "background")? {
        None | Some("auto") | Some("opaque") => {}
        Some("transparent") => {
            return Err(Invalid::new(
                "background",
                "background transparent is not available: the Gemini image models make opaque \
                 images only. Use opaque or auto.",
            ));
        }
        Some(other) => {
            return Err(Invalid::new(
                "background",
                format!("background {other:?} is not valid: use auto, opaque or transparent."),
            ));
        }
    }
    let response_format = match string(fields, "response_format")? {
        None | Some("b64_json") => ResponseFormat::B64Json,
        Some("url") => ResponseFormat::Url,
        Some(other) => {
            return Err(Invalid::new(
                "response_format",
                format!("response_format {other:?} is not valid: use b64_json or url."),
            ));
        }
    };
    let output_format = match string(fields, "output_format")? {
        None => None,
        Some(text) => Some(OutputFormat::parse(text).ok_or_else(|| {
            Invalid::new(
                "output_format",
                format!("output_format {text:?} is not valid: use png, jpeg or webp."),
            )
        })?),
    };
    let output_compression = match integer(fields, "output_compression")? {
        None => None,
        Some(n @ 0..=100) => Some(n),
        Some(_) => {
            return Err(Invalid::new(
                "output_compression",
                "output_compression must be an integer from 0 to 100.",
            ));
        }
    };
    let stream = boolean(fields, "stream")?.unwrap_or(false);
    match integer(fields, "partial_images")? {
        None | Some(0..=3) => {}
        Some(_) => {
            return Err(Invalid::new(
                "partial_images",
                "partial_images must be an integer from 0 to 3.",
            ));
        }
    }
    let user = string(fields, "user")?;

    // Our own `aspect_ratio` and `resolution` win over what `size` and `quality` imply.
    let own_ratio = string(fields, "aspect_ratio")?;
    let own_resolution = string(fields, "resolution")?;
    let size_resolution = match size {
        None => None,
        Some((w, h)) => Some(resolution_for(w, h).ok_or_else(|| {
            Invalid::new(
                "size",
                format!("size {w}x{h} is larger than any model makes: at most 6144 pixels a side."),
            )
        })?),
    };
    if let (Some(resolution), None) = (size_resolution, own_resolution)
        && resolution != Resolution::R1K
        && !model.supports_resolution_choice()
    {
        let (w, h) = size.unwrap_or_default();
        return Err(Invalid::new(
            "size",
            format!(
                "size {w}x{h} needs resolution {}, and model {} makes only 1K images: use a size \
                 whose long side is at most 1536, or another model.",
                resolution.as_str(),
                model.name()
            ),
        ));
    }
    let preferred = (prefers_2k && model.supports_resolution_choice()).then_some(Resolution::R2K);
    let resolution = size_resolution
        .into_iter()
        .chain(preferred)
        .max_by_key(|r| resolution_rank(*r))
        .unwrap_or(Resolution::R1K);
    let ratio = size.map(|(w, h)| AspectRatio::nearest(w, h));

    let mut body = Map::new();
    let action = match operation {
        Operation::Generations => "generate",
        Operation::Edits => "edit",
    };
    body.insert("action".into(), action.into());
    body.insert("prompt".into(), prompt.into());
    body.insert("model".into(), model.name().into());
    body.insert("count".into(), count.into());
    if let Some(ratio) = own_ratio.or(ratio.map(AspectRatio::as_str)) {
        body.insert("aspect_ratio".into(), ratio.into());
    }
    body.insert(
        "resolution".into(),
        own_resolution.unwrap_or(resolution.as_str()).into(),
    );
    let mut first_image_size = None;
    if operation == Operation::Edits {
        let (images, first) = edit_images(fields, &uploads.images, context)?;
        first_image_size = first;
        body.insert("image_urls".into(), images.into());
        if let Some(mask) = edit_mask(fields, uploads.mask.as_ref(), context)? {
            body.insert("mask".into(), mask.into());
        }
    }
    if let Some(format) = output_format {
        body.insert("output_format".into(), format.as_str().into());
    }
    if let Some(compression) = output_compression {
        body.insert("output_compression".into(), compression.into());
    }
    if let Some(user) = user {
        body.insert("user".into(), user.into());
    }
    if form == Form::Original {
        if let Some(url) = string(fields, "callback_url")? {
            body.insert("callback_url".into(), url.into());
        }
        if let Some(asynchronous) = boolean(fields, "async")? {
            body.insert("async".into(), asynchronous.into());
        }
    }
    body.insert(
        "via".into(),
        match (form, operation) {
            (Form::OpenAi, Operation::Generations) => "/v1/images/generations",
            (Form::OpenAi, Operation::Edits) => "/v1/images/edits",
            (Form::Original, Operation::Generations) => "/openai/images/generations",
            (Form::Original, Operation::Edits) => "/openai/images/edits",
        }
        .into(),
    );

    let translated = validated(Value::Object(body), context.limits)?;
    let request = &translated.request;
    let size = request
        .aspect_ratio
        .or_else(|| first_image_size.map(|(w, h)| AspectRatio::nearest(w, h)))
        .map(|ratio| request.model.pixel_size(ratio, request.resolution));
    let answering = Answering {
        operation,
        response_format,
        stream,
        quality,
        output_format: request.output.format.unwrap_or(OutputFormat::Png),
        size,
    };
    Ok(OpenAiRequest {
        translated,
        answering,
    })
}

fn resolution_rank(resolution: Resolution) -> u8 {
    match resolution {
        Resolution::R1K => 1,
        Resolution::R2K => 2,
        Resolution::R4K => 4,
    }
}

/// An edit's input images as `image_urls`, and the pixel size of the first when it is known.
type EditImages = (Vec<String>, Option<(u32, u32)>);

/// An edit's input images: uploaded files (as `data:` URIs), or `image`/`images` in a JSON body
/// (URLs or `data:` URIs; `images` may hold `{"image_url": …}` objects, as OpenAI's JSON edits
/// do). Also the pixel size of the first upload, when known.
fn edit_images(
    fields: &Map<String, Value>,
    uploads: &[Bytes],
    context: &Context<'_>,
) -> Result<EditImages, Invalid> {
    let too_many = |n: usize| {
        Invalid::new(
            "image",
            format!("{n} images were sent: at most {MAX_IMAGE_URLS} are allowed."),
        )
    };
    if !uploads.is_empty() {
        if uploads.len() > MAX_IMAGE_URLS {
            return Err(too_many(uploads.len()));
        }
        for (i, bytes) in uploads.iter().enumerate() {
            let param = format!("image[{i}]");
            check_upload_size(&param, bytes, context)?;
            // Named here: past this point it is a `data:` URI of `image_urls`, which the client
            // never sent.
            if sniff_mime(bytes) == "application/octet-stream" {
                return Err(Invalid::new(
                    &param,
                    format!("{param} is not an image: upload a PNG, JPEG, GIF, WebP or HEIF file."),
                ));
            }
        }
        let first = uploads.first().and_then(|b| pixel_size(b));
        return Ok((uploads.iter().map(|b| data_uri(b)).collect(), first));
    }
    let given = fields.get("image").or_else(|| fields.get("images"));
    let items: Vec<&Value> = match given {
        None | Some(Value::Null) => {
            return Err(Invalid::new(
                "image",
                "image is required: upload one or more files as image or image[], or send URLs.",
            ));
        }
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one) => vec![one],
    };
    if items.is_empty() {
        return Err(Invalid::new("image", "image must not be empty."));
    }
    if items.len() > MAX_IMAGE_URLS {
        return Err(too_many(items.len()));
    }
    let urls = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            image_reference(item).ok_or_else(|| {
                Invalid::new(
                    format!("image[{i}]"),
                    format!("image[{i}] must be a URL or a data: URI (or {{\"image_url\": …}})."),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((urls, None))
}

fn edit_mask(
    fields: &Map<String, Value>,
    upload: Option<&Bytes>,
    context: &Context<'_>,
) -> Result<Option<String>, Invalid> {
    if let Some(bytes) = upload {
        check_upload_size("mask", bytes, context)?;
        if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err(Invalid::new(
                "mask",
                "mask must be a PNG whose transparent pixels mark where the image may change.",
            ));
        }
        return Ok(Some(data_uri(bytes)));
    }
    match fields.get("mask") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => image_reference(value).map(Some).ok_or_else(|| {
            Invalid::new(
                "mask",
                "mask must be a URL or a data: URI (or {\"image_url\": …}).",
            )
        }),
    }
}

fn image_reference(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Object(object) => match object.get("image_url") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            _ => None,
        },
        _ => None,
    }
}

fn check_upload_size(param: &str, bytes: &[u8], context: &Context<'_>) -> Result<(), Invalid> {
    if bytes.len() > context.max_image_bytes {
        return Err(Invalid::too_large(
            param,
            format!(
                "{param} is too large: {} bytes, at most {} are allowed.",
                bytes.len(),
                megabytes(context.max_image_bytes)
            ),
        ));
    }
    if bytes.is_empty() {
        return Err(Invalid::new(param, format!("{param} is empty.")));
    }
    Ok(())
}

/// The pixel size of a PNG, JPEG, GIF or WebP from its header alone.
fn pixel_size(bytes: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

/// A string field; `null` is absent (the SDKs send unset options as `null`).
fn string<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Invalid> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(Invalid::new(name, format!("{name} must be a string."))),
    }
}

/// An integer field: a JSON number, or a numeric string (multipart bodies send `n` as `"2"`).
fn integer(fields: &Map<String, Value>, name: &str) -> Result<Option<u8>, Invalid> {
    let bad = || Invalid::new(name, format!("{name} must be an integer."));
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Number(_)) => {
            let n = crate::domain::whole_number(value).ok_or_else(bad)?;
            Ok(Some(u8::try_from(n).unwrap_or(u8::MAX)))
        }
        Some(Value::String(s)) => {
            let n: u64 = s.trim().parse().map_err(|_| bad())?;
            Ok(Some(u8::try_from(n).unwrap_or(u8::MAX)))
        }
        Some(_) => Err(bad()),
    }
}

/// A boolean field: JSON `true`/`false`, or the strings multipart bodies send.
fn boolean(fields: &Map<String, Value>, name: &str) -> Result<Option<bool>, Invalid> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(_) => Err(Invalid::new(name, format!("{name} must be true or false."))),
    }
}

/// One image of a finished task, as OpenAI's answer shows it.
#[derive(Debug, Clone)]
pub struct Made {
    pub url: String,
    /// The stored bytes: needed for `b64_json` (and for streaming), not for `url`.
    pub bytes: Option<Bytes>,
}

/// The answer to a finished request: `created` (Unix seconds) and one `data` entry per image.
pub fn answer(request: &Answering, created: i64, images: &[Made]) -> Value {
    let data: Vec<Value> = images
        .iter()
        .map(|image| match (request.response_format, &image.bytes) {
            (ResponseFormat::B64Json, Some(bytes)) => json!({"b64_json": base64(bytes)}),
            _ => json!({"url": image.url}),
        })
        .collect();
    let mut answer = json!({
        "created": created,
        "data": data,
        "background": "opaque",
        "output_format": request.output_format.as_str(),
        "quality": request.quality,
        "usage": usage(),
    });
    if let Some(size) = answer_size(request, images) {
        answer["size"] = size.into();
    }
    answer
}

/// The stream events of a finished request: one `…completed` event per image.
pub fn stream_events(request: &Answering, created: i64, images: &[Made]) -> Vec<Value> {
    let size = answer_size(request, images);
    images
        .iter()
        .map(|image| {
            let mut event = json!({
                "type": format!("{}.completed", request.operation.event_prefix()),
                "created_at": created,
                "background": "opaque",
                "output_format": request.output_format.as_str(),
                "quality": request.quality,
                "usage": usage(),
            });
            match &image.bytes {
                Some(bytes) => event["b64_json"] = base64(bytes).into(),
                None => event["url"] = image.url.clone().into(),
            }
            if let Some(size) = &size {
                event["size"] = size.clone().into();
            }
            event
        })
        .collect()
}

/// An error in the middle of a stream (after the 200 was sent).
pub fn stream_error(error: &ApiError) -> Value {
    let (_, body) = error_body(error, None);
    json!({"type": "error", "error": body["error"]})
}

/// `WxH` of the first image: read from its bytes when they are at hand, else what the request
/// decided.
fn answer_size(request: &Answering, images: &[Made]) -> Option<String> {
    let made = images
        .first()
        .and_then(|image| image.bytes.as_deref())
        .and_then(pixel_size);
    made.or(request.size).map(|(w, h)| format!("{w}x{h}"))
}

/// Gemini bills per image, and the task does not keep token counts: every count is zero.
fn usage() -> Value {
    json!({"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
           "input_tokens_details": {"text_tokens": 0, "image_tokens": 0}})
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The status and body of a contract error in OpenAI's shape. `param` names the request field at
/// fault, when one is.
pub fn error_body(error: &ApiError, param: Option<&str>) -> (u16, Value) {
    let (status, kind, code): (u16, &str, Option<&str>) = match &error.code {
        ErrorCode::NoToken => (401, "invalid_request_error", None),
        ErrorCode::InvalidToken | ErrorCode::TokenExpired => {
            (401, "invalid_request_error", Some("invalid_api_key"))
        }
        ErrorCode::TokenMismatched | ErrorCode::Disabled => {
            (403, "permission_error", Some(error.code.as_str()))
        }
        ErrorCode::BadRequest => (400, "invalid_request_error", None),
        ErrorCode::RequestTooLarge => (413, "invalid_request_error", Some("request_too_large")),
        ErrorCode::ApiNotImplemented => (404, "invalid_request_error", Some("model_not_found")),
        ErrorCode::NoApi => (404, "invalid_request_error", None),
        ErrorCode::UsedUp => (429, "insufficient_quota", Some("insufficient_quota")),
        ErrorCode::TooManyRequests => (429, "requests", Some("rate_limit_exceeded")),
        ErrorCode::Forbidden => (
            400,
            "image_generation_user_error",
            Some("moderation_blocked"),
        ),
        ErrorCode::ApiError | ErrorCode::Other(_) => (500, "server_error", None),
    };
    let body = json!({"error": {
        "message": error.message,
        "type": kind,
        "param": param,
        "code": code,
    }});
    (status, body)
}

/// `GET /v1/models`: the models this server offers.
pub fn model_list(models: &[&str]) -> Value {
    let data: Vec<Value> = models.iter().map(|id| model_entry(id)).collect();
    json!({"object": "list", "data": data})
}

pub fn model_entry(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "nano-banana"})
}

#[cfg(test)]
mod tests;
