//! The Gemini wire format (docs/upstreams.md, Gemini request and Gemini response): the JSON sent
//! for a job, and the answer read back into an image. Not here: the HTTP call (`mod.rs`) and what
//! an answer without an image means (`errors`).

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use serde::{Deserialize, Serialize};

use super::errors::{excerpt, without_image};
use crate::providers::upstream_error::truncate;
use crate::providers::{GeneratedImage, ImageJob, ProviderError};

// ---------------------------------------------------------------------------------------------
// Request

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    response_modalities: [&'static str; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    image_config: Option<ImageConfig>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    aspect_ratio: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_size: Option<&'static str>,
}

/// The JSON body of a call for `job`: `{"contents": [{"role": "user", "parts": [the text, then
/// the inputs as `inline_data`]}], "generationConfig": …}`, with `imageConfig` only when the job
/// asks for a ratio or a size. Written by hand rather than through a struct: the inputs' base64
/// (megabytes for an edit) is encoded straight into the body, without a `String` of its own to
/// copy and without serde_json's escaping pass over every character (base64 needs no escaping;
/// BENCHMARKS.md, S5). The bytes are exactly what serializing the struct gave.
pub(super) fn request_body(job: &ImageJob) -> Result<Vec<u8>, serde_json::Error> {
    const ENGINE: GeneralPurpose = general_purpose::STANDARD;
    let encoded = |input: &crate::providers::InputImage| {
        base64::encoded_len(input.bytes.len(), true).unwrap_or(usize::MAX)
    };
    let size = job
        .inputs
        .iter()
        .map(|input| encoded(input).saturating_add(64))
        .fold(job.prompt.len() + 256, usize::saturating_add);
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(br#"{"contents":[{"role":"user","parts":[{"text":"#);
    serde_json::to_writer(&mut out, &job.prompt)?;
    out.push(b'}');
    for input in &job.inputs {
        out.extend_from_slice(br#",{"inline_data":{"mime_type":"#);
        serde_json::to_writer(&mut out, input.mime_type)?;
        out.extend_from_slice(br#","data":""#);
        let start = out.len();
        out.resize(start + encoded(input), 0);
        let written = ENGINE
            .encode_slice(&input.bytes, &mut out[start..])
            .map_err(serde::ser::Error::custom)?;
        out.truncate(start + written);
        out.extend_from_slice(br#""}}"#);
    }
    out.extend_from_slice(br#"]}],"generationConfig":"#);
    let aspect_ratio = job.aspect_ratio.map(|r| r.as_str());
    let image_size = job.image_size.map(|s| s.as_str());
    let config = GenerationConfig {
        response_modalities: ["TEXT", "IMAGE"],
        image_config: (aspect_ratio.is_some() || image_size.is_some()).then_some(ImageConfig {
            aspect_ratio,
            image_size,
        }),
    };
    serde_json::to_writer(&mut out, &config)?;
    out.push(b'}');
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Success answers

// Every field is optional and every enum a plain string, so new finish reasons, new fields or
// missing ones never make an answer unreadable. The image's base64 (megabytes) is borrowed from
// the response body rather than copied into a `String`; the structs carry the body's lifetime for
// that (BENCHMARKS.md, S2).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct GenerateContentResponse<'a> {
    #[serde(borrow)]
    candidates: Option<Vec<Candidate<'a>>>,
    #[serde(alias = "prompt_feedback")]
    prompt_feedback: Option<PromptFeedback>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Candidate<'a> {
    #[serde(borrow)]
    content: Option<Content<'a>>,
    #[serde(alias = "finish_reason")]
    pub(super) finish_reason: Option<String>,
    #[serde(alias = "finish_message")]
    pub(super) finish_message: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Content<'a> {
    #[serde(borrow)]
    parts: Option<Vec<Part<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Part<'a> {
    pub(super) text: Option<String>,
    pub(super) thought: Option<bool>,
    #[serde(alias = "inline_data", borrow)]
    inline_data: Option<Blob<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Blob<'a> {
    #[serde(alias = "mime_type")]
    mime_type: Option<String>,
    /// Borrowed unless the JSON string has escapes (then serde hands over an owned copy).
    #[serde(borrow)]
    data: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct PromptFeedback {
    #[serde(alias = "block_reason")]
    pub(super) block_reason: Option<String>,
    #[serde(alias = "block_reason_message")]
    pub(super) block_reason_message: Option<String>,
}

pub(super) fn parse_success(body: &[u8]) -> Result<GeneratedImage, ProviderError> {
    // serde would read a JSON array into these structs field by field; only an object is an
    // answer.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ProviderError::InvalidResponse(format!(
            "not a JSON object: {}",
            excerpt(body)
        )));
    }
    let answer: GenerateContentResponse = serde_json::from_slice(body).map_err(|err| {
        ProviderError::InvalidResponse(format!(
            "not a generateContent answer ({err}): {}",
            excerpt(body)
        ))
    })?;
    let candidates = answer.candidates.unwrap_or_default();

    // Gemini 3 models send interim "thought images" before the real one; the last non-thought
    // image is the answer.
    let image = parts(&candidates)
        .filter(|part| part.thought != Some(true))
        .filter_map(|part| part.inline_data.as_ref())
        .rfind(|blob| {
            blob.mime_type
                .as_deref()
                .is_some_and(|m| m.to_ascii_lowercase().starts_with("image/"))
        });
    if let Some(blob) = image {
        let data = blob.data.as_deref().unwrap_or_default();
        let bytes = decode_base64(data).ok_or_else(|| {
            ProviderError::InvalidResponse(format!(
                "the image part is not base64 ({} bytes starting {:?})",
                data.len(),
                truncate(data, 40)
            ))
        })?;
        if bytes.is_empty() {
            return Err(ProviderError::InvalidResponse(
                "the image part is empty".to_owned(),
            ));
        }
        return Ok(GeneratedImage {
            bytes: bytes.into(),
            mime_type: blob.mime_type.clone().unwrap_or_default(),
        });
    }
    Err(without_image(&candidates, answer.prompt_feedback.as_ref()))
}

/// Every part of every candidate, in order.
pub(super) fn parts<'c, 'a>(
    candidates: &'c [Candidate<'a>],
) -> impl DoubleEndedIterator<Item = &'c Part<'a>> {
    candidates
        .iter()
        .filter_map(|c| c.content.as_ref()?.parts.as_ref())
        .flatten()
}

/// Google sends standard base64 with padding; proxies have been seen to drop the padding,
/// wrap lines, or use the URL-safe alphabet.
fn decode_base64(data: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    if let Ok(bytes) = STANDARD.decode(data) {
        return Some(bytes);
    }
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(&compact)
        .or_else(|_| URL_SAFE.decode(&compact))
        .ok()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parse(body: Value) -> Result<GeneratedImage, ProviderError> {
        parse_success(body.to_string().as_bytes())
    }

    #[test]
    fn the_request_body_is_compact_json_with_the_inputs_in_standard_base64() {
        let input = |bytes: &'static [u8], mime_type| crate::providers::InputImage {
            bytes: bytes::Bytes::from_static(bytes),
            mime_type,
            width: 1,
            height: 1,
        };
        let job = ImageJob {
            prompt: "a \"quoted\" lemon\n".into(),
            model: "nano-banana".into(),
            upstream_model: "m".into(),
            inputs: vec![input(b"\x89PNG", "image/png"), input(b"ab", "image/jpeg")],
            aspect_ratio: None,
            image_size: Some(crate::domain::Resolution::R2K),
            width: 1,
            height: 1,
        };
        let body = String::from_utf8(request_body(&job).unwrap()).unwrap();
        let expected = json!({
            "contents": [{"role": "user", "parts": [
                {"text": "a \"quoted\" lemon\n"},
                {"inline_data": {"mime_type": "image/png", "data": "iVBORw=="}},
                {"inline_data": {"mime_type": "image/jpeg", "data": "YWI="}},
            ]}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                                 "imageConfig": {"imageSize": "2K"}},
        });
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), expected);
        // Compact, in the struct's field order, as Google's REST samples send it.
        assert!(
            body.starts_with(
                r#"{"contents":[{"role":"user","parts":[{"text":"a \"quoted\" lemon\n"},{"inline_data":{"mime_type":"image/png","data":"iVBORw=="}},"#
            ),
            "{body}"
        );
        let plain = ImageJob {
            inputs: Vec::new(),
            image_size: None,
            ..job
        };
        let body: Value = serde_json::from_slice(&request_body(&plain).unwrap()).unwrap();
        assert!(
            body["generationConfig"].get("imageConfig").is_none(),
            "{body}"
        );
    }

    #[test]
    fn parsing_is_lenient_and_takes_the_last_real_image() {
        let first = general_purpose::STANDARD.encode(b"first");
        let last = general_purpose::STANDARD_NO_PAD.encode(b"last!");
        let image = parse(json!({
            "candidates": [{
                "content": {"parts": [
                    {"text": "here you go"},
                    {"inline_data": {"mime_type": "image/jpeg", "data": first}},
                    {"inlineData": {"mimeType": "image/webp", "data": last}, "thoughtSignature": "x"},
                    {"inlineData": {"mimeType": "image/png", "data": "dGhvdWdodA=="}, "thought": true},
                    {"inlineData": {"mimeType": "application/pdf", "data": "cGRm"}},
                ]},
                "finishReason": "SOMETHING_NEW_IN_2027",
                "safetyRatings": null,
            }],
            "newTopLevelField": {"a": 1},
        }))
        .unwrap();
        assert_eq!(&image.bytes[..], b"last!");
        assert_eq!(image.mime_type, "image/webp");
    }

    #[test]
    fn image_data_with_json_escapes_is_read_like_plain_data() {
        // `/` may be sent as `\/` (a JSON escape some proxies use): the image data is then not
        // borrowed from the body but unescaped into a copy, with the same bytes.
        let bytes: Vec<u8> = (0..=255u8).collect();
        let plain = general_purpose::STANDARD.encode(&bytes);
        assert!(plain.contains('/'));
        let escaped = plain.replace('/', "\\/");
        let body = format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"inlineData":{{"mimeType":"image/png","data":"{escaped}"}}}}]}}}}]}}"#
        );
        let image = parse_success(body.as_bytes()).unwrap();
        assert_eq!(&image.bytes[..], &bytes[..]);
    }

    #[test]
    fn answers_without_images_are_classified() {
        let refused = |body: Value| match parse(body) {
            Err(ProviderError::Refused(message)) => message,
            other => panic!("{other:?}"),
        };
        let no_image = |body: Value| match parse(body) {
            Err(ProviderError::NoImage(message)) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused(
                json!({"promptFeedback": {"blockReason": "SAFETY", "blockReasonMessage": "Prompt was blocked due to safety"}})
            ),
            "prompt blocked (SAFETY): Prompt was blocked due to safety"
        );
        assert_eq!(
            refused(
                json!({"candidates": [{"finishReason": "IMAGE_SAFETY", "finishMessage": "contenuto non consentito", "content": {"parts": []}}]})
            ),
            "IMAGE_SAFETY: contenuto non consentito"
        );
        assert_eq!(
            refused(json!({"candidates": [{"finishReason": "IMAGE_PROHIBITED_CONTENT"}]})),
            "IMAGE_PROHIBITED_CONTENT"
        );
        assert_eq!(
            refused(json!({"candidates": [{"finishReason": "IMAGE_RECITATION"}]})),
            "IMAGE_RECITATION"
        );
        assert_eq!(
            no_image(
                json!({"candidates": [{"finishReason": "NO_IMAGE", "content": {"parts": [{"text": "Nö"}]}}]})
            ),
            "finish reason NO_IMAGE: Nö"
        );
        assert_eq!(
            no_image(json!({"candidates": [{"finishReason": "IMAGE_OTHER"}]})),
            "finish reason IMAGE_OTHER"
        );
        assert_eq!(
            no_image(json!({"candidates": [{"content": {"parts": [
                {"text": "thinking hard", "thought": true},
                {"inlineData": {"mimeType": "image/png", "data": "dGhvdWdodA=="}, "thought": true},
                {"text": "a description instead"},
            ]}, "finishReason": "STOP"}]})),
            "the model answered with text only: a description instead"
        );
        assert_eq!(
            no_image(json!({"candidates": [], "usageMetadata": {}})),
            "the answer has no candidates"
        );
        assert_eq!(
            no_image(json!({"candidates": [{"finishReason": "MAX_TOKENS"}]})),
            "finish reason MAX_TOKENS"
        );
        for garbage in [&b"<html>oops</html>"[..], b"[]", b"\"text\"", b""] {
            assert!(
                matches!(
                    parse_success(garbage),
                    Err(ProviderError::InvalidResponse(_))
                ),
                "{garbage:?}"
            );
        }
        let empty = parse(json!({"candidates": [{"content": {"parts": [
            {"inlineData": {"mimeType": "image/png", "data": ""}}
        ]}}]}));
        assert!(matches!(empty, Err(ProviderError::InvalidResponse(_))));
    }
}
