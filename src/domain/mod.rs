//! Validated domain types ("parse, don't validate"): once an `ImagesRequest` exists, every field in
//! it obeys the contract. Parsing works on `serde_json::Value` rather than a derived struct so that
//! each failure can name the field and say why, in the contract's words, and so that unknown fields
//! (`size`, `negative_prompt`, `mirror`, …) are ignored as the contract requires.
//!
//! What does not live here: fetching images (`fetch`), the model → upstream mapping (`providers`).
//! Imports no other module of the crate (the clock and the hash helper here are leaves too).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

mod lookup;
pub mod model;
mod output;
mod prices;

pub use lookup::{MAX_BATCH_IDS, TasksRequest};
pub use model::Model;
pub use output::{OutputFormat, OutputOptions};
pub use prices::Prices;

/// The longest side, in pixels, of any image we decode or draw: input images over it are
/// refused before they are decoded, and the placeholder never draws more.
pub const MAX_IMAGE_SIDE: u32 = 16_384;

/// The most images one `edit` may reference (contract: at most 16).
pub const MAX_IMAGE_URLS: usize = 16;

/// A `bad_request` message naming the field that failed and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidField(pub String);

fn invalid(message: impl Into<String>) -> InvalidField {
    InvalidField(message.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Generate,
    Edit,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Generate => "generate",
            Action::Edit => "edit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AspectRatio {
    R1x1,
    R3x2,
    R2x3,
    R16x9,
    R9x16,
    R4x3,
    R3x4,
}

impl AspectRatio {
    pub const ALL: [AspectRatio; 7] = [
        AspectRatio::R1x1,
        AspectRatio::R3x2,
        AspectRatio::R2x3,
        AspectRatio::R16x9,
        AspectRatio::R9x16,
        AspectRatio::R4x3,
        AspectRatio::R3x4,
    ];

    /// The wire form: "1:1", "3:2", "2:3", "16:9", "9:16", "4:3", "3:4".
    pub fn as_str(self) -> &'static str {
        match self {
            AspectRatio::R1x1 => "1:1",
            AspectRatio::R3x2 => "3:2",
            AspectRatio::R2x3 => "2:3",
            AspectRatio::R16x9 => "16:9",
            AspectRatio::R9x16 => "9:16",
            AspectRatio::R4x3 => "4:3",
            AspectRatio::R3x4 => "3:4",
        }
    }

    pub fn parse(s: &str) -> Option<AspectRatio> {
        AspectRatio::ALL.into_iter().find(|r| r.as_str() == s)
    }

    fn value(self) -> f64 {
        let (w, h) = match self {
            AspectRatio::R1x1 => (1.0, 1.0),
            AspectRatio::R3x2 => (3.0, 2.0),
            AspectRatio::R2x3 => (2.0, 3.0),
            AspectRatio::R16x9 => (16.0, 9.0),
            AspectRatio::R9x16 => (9.0, 16.0),
            AspectRatio::R4x3 => (4.0, 3.0),
            AspectRatio::R3x4 => (3.0, 4.0),
        };
        w / h
    }

    /// The allowed ratio nearest to `width:height`, compared on a log scale so that 2:1 is as far
    /// from 1:1 as 1:2 is. Used for an edit without `aspect_ratio`: the first input decides.
    pub fn nearest(width: u32, height: u32) -> AspectRatio {
        if width == 0 || height == 0 {
            return AspectRatio::R1x1;
        }
        let target = (f64::from(width) / f64::from(height)).ln();
        let mut best = AspectRatio::R1x1;
        let mut best_distance = f64::INFINITY;
        for ratio in AspectRatio::ALL {
            let distance = (ratio.value().ln() - target).abs();
            if distance < best_distance {
                best = ratio;
                best_distance = distance;
            }
        }
        best
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    R1K,
    R2K,
    R4K,
}

impl Resolution {
    /// The wire form, also Gemini's `imageSize`: "1K", "2K", "4K".
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::R1K => "1K",
            Resolution::R2K => "2K",
            Resolution::R4K => "4K",
        }
    }

    pub fn parse(s: &str) -> Option<Resolution> {
        match s {
            "1K" => Some(Resolution::R1K),
            "2K" => Some(Resolution::R2K),
            "4K" => Some(Resolution::R4K),
            _ => None,
        }
    }
}

/// Limits that the operator may change; validation needs them.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// In characters (not bytes), so CJK prompts get the same allowance as Latin ones.
    pub max_prompt_chars: usize,
    pub max_url_chars: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_prompt_chars: 20_000,
            max_url_chars: 4096,
        }
    }
}

/// A valid `POST /nano-banana/images` body.
#[derive(Debug, Clone)]
pub struct ImagesRequest {
    pub action: Action,
    pub prompt: String,
    pub model: Model,
    /// `http(s)` URLs or `data:` URIs as sent; checked against the fetch policy before a task is
    /// created, loaded when it runs. Always empty for `generate`.
    pub image_urls: Vec<String>,
    pub count: u8,
    /// `None` only for an edit that gave none: the first input image decides.
    pub aspect_ratio: Option<AspectRatio>,
    pub resolution: Resolution,
    pub callback_url: Option<String>,
    pub asynchronous: bool,
    /// Ours: how the stored images are encoded.
    pub output: OutputOptions,
    /// Ours, for an edit: a PNG (`data:` URI or URL) the size of the first image whose
    /// transparent pixels mark what may change; the rest of the first image is kept as it was.
    pub mask: Option<String>,
}

impl ImagesRequest {
    /// Whether the client gets its answer at once (async or callback mode) or waits (sync).
    pub fn answers_at_once(&self) -> bool {
        self.asynchronous || self.callback_url.is_some()
    }

    pub fn parse(body: &Value, limits: &RequestLimits) -> Result<ImagesRequest, InvalidField> {
        let Some(object) = body.as_object() else {
            return Err(invalid("the request body must be a JSON object."));
        };

        let action = match optional_str(object, "action")? {
            None => Action::Generate,
            Some("generate") => Action::Generate,
            Some("edit") => Action::Edit,
            Some(_) => return Err(invalid("action must be one of: generate, edit.")),
        };

        let prompt = match optional_str(object, "prompt")? {
            None => return Err(invalid("prompt is required.")),
            Some(p) if p.trim().is_empty() => return Err(invalid("prompt must not be empty.")),
            Some(p) if p.chars().count() > limits.max_prompt_chars => {
                return Err(invalid(format!(
                    "prompt is too long: at most {} characters.",
                    limits.max_prompt_chars
                )));
            }
            Some(p) => p.to_owned(),
        };

        let model = match optional_str(object, "model")? {
            None => Model::default(),
            Some(name) => Model::parse(name).ok_or_else(|| invalid("model is invalid."))?,
        };

        let image_urls = match action {
            Action::Generate => Vec::new(),
            Action::Edit => parse_image_urls(object, limits)?,
        };

        let count = match object.get("count") {
            None | Some(Value::Null) => 1,
            Some(value) => match whole_number(value) {
                Some(n @ 1..=4) => n as u8,
                _ => return Err(invalid("count must be an integer from 1 to 4.")),
            },
        };

        let aspect_ratio = match optional_str(object, "aspect_ratio")? {
            Some(s) => Some(AspectRatio::parse(s).ok_or_else(|| {
                invalid("aspect_ratio must be one of: 1:1, 3:2, 2:3, 16:9, 9:16, 4:3, 3:4.")
            })?),
            None if action == Action::Generate => Some(AspectRatio::R1x1),
            None => None,
        };

        let resolution = match optional_str(object, "resolution")? {
            None => Resolution::R1K,
            Some(s) => Resolution::parse(s)
                .ok_or_else(|| invalid("resolution must be one of: 1K, 2K, 4K."))?,
        };
        if resolution != Resolution::R1K && !model.supports_resolution_choice() {
            return Err(invalid(format!(
                "resolution {} is not available for model {}: it accepts only 1K.",
                resolution.as_str(),
                model.name()
            )));
        }

        let callback_url = match optional_str(object, "callback_url")? {
            None => None,
            Some(s) if s.len() > limits.max_url_chars => {
                return Err(invalid(format!(
                    "callback_url is too long: at most {} characters.",
                    limits.max_url_chars
                )));
            }
            // Old clients send an empty or dummy callback_url: an empty one means none.
            Some(s) if s.trim().is_empty() => None,
            Some(s) => Some(s.to_owned()),
        };

        let asynchronous = match object.get("async") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("async must be a boolean.")),
        };

        let output = OutputOptions::parse(object)?;
        let mask = match optional_str(object, "mask")? {
            None => None,
            Some(_) if action == Action::Generate => {
                return Err(invalid("mask is only for action edit."));
            }
            Some(s) if s.trim().is_empty() => None,
            Some(s) if !is_data_uri(s.trim()) && s.len() > limits.max_url_chars => {
                return Err(invalid(format!(
                    "mask is too long: at most {} characters.",
                    limits.max_url_chars
                )));
            }
            Some(s) => Some(s.trim().to_owned()),
        };

        Ok(ImagesRequest {
            action,
            prompt,
            model,
            image_urls,
            count,
            aspect_ratio,
            resolution,
            callback_url,
            asynchronous,
            output,
            mask,
        })
    }
}

fn parse_image_urls(
    object: &Map<String, Value>,
    limits: &RequestLimits,
) -> Result<Vec<String>, InvalidField> {
    let items = match object.get("image_urls") {
        None | Some(Value::Null) => {
            return Err(invalid("image_urls is required for action edit."));
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("image_urls must be an array of strings.")),
    };
    if items.is_empty() {
        return Err(invalid("image_urls must not be empty for action edit."));
    }
    if items.len() > MAX_IMAGE_URLS {
        return Err(invalid(format!(
            "image_urls has {} items: at most {MAX_IMAGE_URLS} are allowed.",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) if s.trim().is_empty() => {
                Err(invalid(format!("image_urls[{i}] must not be empty.")))
            }
            // data: URIs carry the image itself and are bounded by the image size cap instead.
            Value::String(s) if !is_data_uri(s.trim()) && s.len() > limits.max_url_chars => {
                Err(invalid(format!(
                    "image_urls[{i}] is too long: at most {} characters.",
                    limits.max_url_chars
                )))
            }
            Value::String(s) => Ok(s.trim().to_owned()),
            _ => Err(invalid(format!("image_urls[{i}] must be a string."))),
        })
        .collect()
}

/// URI schemes are case-insensitive: `DATA:image/png;…` is a data URI too.
fn is_data_uri(s: &str) -> bool {
    s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("data:"))
}

/// A string field; `null` counts as absent (clients serialise unset options as null).
fn optional_str<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, InvalidField> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(invalid(format!("{field} must be a string."))),
    }
}

/// A JSON number that is a whole number, as `u64`: `2` and also `2.0`, which JSON (and JSON
/// Schema's `integer`) count as the same number and some clients send. `None` for anything else.
pub fn whole_number(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        // Below 2^64 exactly (`u64::MAX as f64` rounds up to 2^64), so the cast is exact.
        let f = value.as_f64()?;
        (f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f)).then_some(f as u64)
    })
}

/// The lowercase hex SHA-256 of `bytes`: how tokens are stored and request bodies compared.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut hex = String::with_capacity(64);
    for byte in Sha256::digest(bytes) {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// The domain's clock: Unix time in milliseconds, as every stored time is. A clock before 1970
/// reads as 0 rather than failing.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: Value) -> Result<ImagesRequest, String> {
        ImagesRequest::parse(&body, &RequestLimits::default()).map_err(|e| e.0)
    }

    #[test]
    fn defaults_for_a_minimal_generate() {
        let r = parse(json!({"prompt": "a cat"})).unwrap();
        assert_eq!(r.action, Action::Generate);
        assert_eq!(r.model.name(), "nano-banana");
        assert_eq!(r.count, 1);
        assert_eq!(r.aspect_ratio, Some(AspectRatio::R1x1));
        assert_eq!(r.resolution, Resolution::R1K);
        assert!(!r.answers_at_once());
    }

    #[test]
    fn edit_leaves_the_ratio_to_the_first_image() {
        let r = parse(json!({"action": "edit", "prompt": "x", "image_urls": ["https://a/b.png"]}))
            .unwrap();
        assert_eq!(r.aspect_ratio, None);
        assert_eq!(r.image_urls, vec!["https://a/b.png"]);
    }

    #[test]
    fn each_invalid_field_is_named() {
        let cases = [
            (json!([1, 2]), "the request body must be a JSON object."),
            (json!("x"), "the request body must be a JSON object."),
            (json!({}), "prompt is required."),
            (json!({"prompt": "  "}), "prompt must not be empty."),
            (json!({"prompt": 5}), "prompt must be a string."),
            (
                json!({"prompt": "x", "action": "paint"}),
                "action must be one of: generate, edit.",
            ),
            (
                json!({"prompt": "x", "model": "dall-e"}),
                "model is invalid.",
            ),
            (
                json!({"prompt": "x", "model": "nano-banana-2.1:official"}),
                "model is invalid.",
            ),
            (
                json!({"prompt": "x", "count": 0}),
                "count must be an integer from 1 to 4.",
            ),
            (
                json!({"prompt": "x", "count": 5}),
                "count must be an integer from 1 to 4.",
            ),
            (
                json!({"prompt": "x", "count": 1.5}),
                "count must be an integer from 1 to 4.",
            ),
            (
                json!({"prompt": "x", "count": "2"}),
                "count must be an integer from 1 to 4.",
            ),
            (
                json!({"prompt": "x", "aspect_ratio": "5:4"}),
                "aspect_ratio must be one of: 1:1, 3:2, 2:3, 16:9, 9:16, 4:3, 3:4.",
            ),
            (
                json!({"prompt": "x", "resolution": "8K"}),
                "resolution must be one of: 1K, 2K, 4K.",
            ),
            (
                json!({"prompt": "x", "resolution": "2K"}),
                "resolution 2K is not available for model nano-banana: it accepts only 1K.",
            ),
            (
                json!({"prompt": "x", "model": "nano-banana-2-lite", "resolution": "4K"}),
                "resolution 4K is not available for model nano-banana-2-lite: it accepts only 1K.",
            ),
            (
                json!({"prompt": "x", "async": "yes"}),
                "async must be a boolean.",
            ),
            (
                json!({"prompt": "x", "callback_url": 7}),
                "callback_url must be a string.",
            ),
            (
                json!({"action": "edit", "prompt": "x"}),
                "image_urls is required for action edit.",
            ),
            (
                json!({"action": "edit", "prompt": "x", "image_urls": []}),
                "image_urls must not be empty for action edit.",
            ),
            (
                json!({"action": "edit", "prompt": "x", "image_urls": "https://a"}),
                "image_urls must be an array of strings.",
            ),
            (
                json!({"action": "edit", "prompt": "x", "image_urls": ["https://a", 3]}),
                "image_urls[1] must be a string.",
            ),
        ];
        for (body, message) in cases {
            assert_eq!(parse(body.clone()).unwrap_err(), message, "for {body}");
        }
    }

    #[test]
    fn too_many_images_and_too_long_prompts_are_refused() {
        let urls: Vec<String> = (0..17).map(|i| format!("https://h/{i}.png")).collect();
        let err = parse(json!({"action": "edit", "prompt": "x", "image_urls": urls})).unwrap_err();
        assert_eq!(err, "image_urls has 17 items: at most 16 are allowed.");
        let long = "長".repeat(20_001);
        assert!(
            parse(json!({"prompt": long}))
                .unwrap_err()
                .starts_with("prompt is too long")
        );
        assert!(parse(json!({"prompt": "長".repeat(20_000)})).is_ok());
    }

    #[test]
    fn pro_models_accept_every_resolution_and_unknown_fields_are_ignored() {
        let r = parse(json!({
            "prompt": "x", "model": "nano-banana-pro", "resolution": "4K",
            "size": "1024x1024", "negative_prompt": "dogs", "mirror": true, "count": null
        }))
        .unwrap();
        assert_eq!(r.resolution, Resolution::R4K);
        assert_eq!(r.count, 1);
    }

    #[test]
    fn nearest_ratio_follows_the_shape() {
        assert_eq!(AspectRatio::nearest(1000, 1000), AspectRatio::R1x1);
        assert_eq!(AspectRatio::nearest(1920, 1080), AspectRatio::R16x9);
        assert_eq!(AspectRatio::nearest(1080, 1920), AspectRatio::R9x16);
        assert_eq!(AspectRatio::nearest(3000, 2000), AspectRatio::R3x2);
        assert_eq!(AspectRatio::nearest(800, 600), AspectRatio::R4x3);
        assert_eq!(AspectRatio::nearest(5000, 100), AspectRatio::R16x9);
        assert_eq!(AspectRatio::nearest(0, 10), AspectRatio::R1x1);
    }

    #[test]
    fn empty_callback_url_means_none_and_async_false_is_sync() {
        let r = parse(json!({"prompt": "x", "callback_url": "", "async": false})).unwrap();
        assert!(!r.answers_at_once());
        let r = parse(json!({"prompt": "x", "callback_url": "https://h/cb"})).unwrap();
        assert!(r.answers_at_once());
    }
}
