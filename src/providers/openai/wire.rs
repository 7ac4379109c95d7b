//! The OpenAI images API on the wire (docs/upstreams.md, OpenAI images API): which size, quality
//! and response fields each model takes, the JSON of `/images/generations`, the multipart body of
//! `/images/edits`, and the answer's `data[0]`. Not here: HTTP, errors (`errors`).
//!
//! Sizes. Our contract speaks in aspect ratios and resolutions (1K/2K/4K) and the job carries the
//! pixel size the public model would make (`ImageJob::width`/`height`); OpenAI's models take a
//! `size` and a `quality`:
//!
//! | upstream model | `size` sent | `quality` sent |
//! |---|---|---|
//! | `gpt-image-1`, `-1-mini`, `-1.5`, `chatgpt-image-*` | the nearest of `1024x1024`, `1536x1024` (landscape), `1024x1536` (portrait) | `medium` at 1K, `high` at 2K and 4K |
//! | `gpt-image-2*` | the job's pixel size, sides rounded to multiples of 16, ratio kept within 1:3–3:1, scaled down to at most 3840 px a side and 8,294,400 px (3840×2160), up to at least 655,360 px | as above |
//! | `dall-e-3` | the nearest of `1024x1024`, `1792x1024`, `1024x1792` | `standard` at 1K, `hd` at 2K and 4K |
//! | `dall-e-2` | `1024x1024` | none |
//! | anything else (LocalAI, gateways) | the nearest of `1024x1024`, `1536x1024`, `1024x1536` | none |
//!
//! "Nearest" compares ratios on a log scale: 1:1 stays square, 4:3, 3:2 and 16:9 are landscape,
//! 3:4, 2:3 and 9:16 portrait. The resolution cannot make a gpt-image-1 picture larger than 1536
//! px, so it buys quality instead: `low` is visibly below what a 1K Gemini image looks like, so
//! 1K is `medium`. A job without a resolution counts as 1K.
//!
//! Response fields. GPT image models always answer base64 and refuse `response_format` (400
//! unknown parameter); they take `output_format: png`. Every other model is sent
//! `response_format: b64_json` (DALL·E and most compatible servers answer a URL otherwise) and
//! no `output_format` (DALL·E refuses it). An answer with a `url` anyway is downloaded.
//!
//! Imports `domain` and `providers` only, nothing above them.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::domain::Resolution;
use crate::providers::{ImageJob, InputImage};

/// gpt-image-2's limits (docs/upstreams.md, OpenAI images API).
pub const GPT_IMAGE_2_MAX_EDGE: u32 = 3840;
pub const GPT_IMAGE_2_MAX_PIXELS: u64 = 3840 * 2160;
pub const GPT_IMAGE_2_MIN_PIXELS: u64 = 655_360;
/// The longer side may be at most this many times the shorter.
pub const GPT_IMAGE_2_MAX_RATIO: u32 = 3;

/// The sizes every classic images endpoint takes.
const CLASSIC_SIZES: [(u32, u32); 3] = [(1024, 1024), (1536, 1024), (1024, 1536)];
const DALL_E_3_SIZES: [(u32, u32); 3] = [(1024, 1024), (1792, 1024), (1024, 1792)];

/// What an upstream model name takes, decided by its name (after any `vendor/` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// `gpt-image-1`, `gpt-image-1-mini`, `gpt-image-1.5`, `chatgpt-image-latest`.
    GptImage1,
    /// `gpt-image-2` and its dated snapshots: free sizes.
    GptImage2,
    DallE3,
    DallE2,
    /// LocalAI and other compatible servers.
    Other,
}

impl ModelKind {
    pub fn of(upstream_model: &str) -> ModelKind {
        let name = upstream_model
            .rsplit('/')
            .next()
            .unwrap_or(upstream_model)
            .to_ascii_lowercase();
        if name.starts_with("gpt-image-2") {
            ModelKind::GptImage2
        } else if name.starts_with("gpt-image-") || name.starts_with("chatgpt-image") {
            ModelKind::GptImage1
        } else if name.starts_with("dall-e-3") {
            ModelKind::DallE3
        } else if name.starts_with("dall-e-2") {
            ModelKind::DallE2
        } else {
            ModelKind::Other
        }
    }

    fn is_gpt_image(self) -> bool {
        matches!(self, ModelKind::GptImage1 | ModelKind::GptImage2)
    }
}

/// The size-dependent fields of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub width: u32,
    pub height: u32,
    pub quality: Option<&'static str>,
    /// `b64_json`, for the models that take it.
    pub response_format: Option<&'static str>,
    /// `png`, for the models that take it.
    pub output_format: Option<&'static str>,
}

impl Plan {
    pub fn for_job(job: &ImageJob) -> Plan {
        let kind = ModelKind::of(&job.upstream_model);
        let resolution = job.image_size.unwrap_or(Resolution::R1K);
        let (width, height) = match kind {
            ModelKind::GptImage2 => gpt_image_2_size(job.width, job.height),
            ModelKind::DallE3 => nearest(&DALL_E_3_SIZES, job.width, job.height),
            ModelKind::DallE2 => (1024, 1024),
            ModelKind::GptImage1 | ModelKind::Other => {
                nearest(&CLASSIC_SIZES, job.width, job.height)
            }
        };
        let quality = match (kind, resolution) {
            (ModelKind::GptImage1 | ModelKind::GptImage2, Resolution::R1K) => Some("medium"),
            (ModelKind::GptImage1 | ModelKind::GptImage2, _) => Some("high"),
            (ModelKind::DallE3, Resolution::R1K) => Some("standard"),
            (ModelKind::DallE3, _) => Some("hd"),
            (ModelKind::DallE2 | ModelKind::Other, _) => None,
        };
        Plan {
            width,
            height,
            quality,
            response_format: (!kind.is_gpt_image()).then_some("b64_json"),
            output_format: kind.is_gpt_image().then_some("png"),
        }
    }

    /// `WIDTHxHEIGHT`.
    pub fn size(&self) -> String {
        format!("{}x{}", self.width, self.height)
    }
}

/// The size in `sizes` whose ratio is nearest to `width:height`, on a log scale.
fn nearest(sizes: &[(u32, u32)], width: u32, height: u32) -> (u32, u32) {
    let target = (f64::from(width.max(1)) / f64::from(height.max(1))).ln();
    let distance = |(w, h): (u32, u32)| ((f64::from(w) / f64::from(h)).ln() - target).abs();
    sizes
        .iter()
        .copied()
        .min_by(|a, b| distance(*a).total_cmp(&distance(*b)))
        .unwrap_or((1024, 1024))
}

/// `width`×`height` made acceptable to gpt-image-2: the ratio within 1:3–3:1, scaled into the
/// pixel and edge limits, sides rounded to multiples of 16 (and nudged by 16 until every limit
/// holds).
pub fn gpt_image_2_size(width: u32, height: u32) -> (u32, u32) {
    let max_ratio = f64::from(GPT_IMAGE_2_MAX_RATIO);
    let (w, h) = (f64::from(width.max(1)), f64::from(height.max(1)));
    let ratio = (w / h).clamp(1.0 / max_ratio, max_ratio);
    // The same area at the clamped ratio.
    let area = w * h;
    let mut h = (area / ratio).sqrt();
    let mut w = h * ratio;
    let max_edge = f64::from(GPT_IMAGE_2_MAX_EDGE);
    let down = (max_edge / w.max(h)).min((GPT_IMAGE_2_MAX_PIXELS as f64 / (w * h)).sqrt());
    let up = (GPT_IMAGE_2_MIN_PIXELS as f64 / (w * h)).sqrt();
    let scale = if down < 1.0 {
        down
    } else if up > 1.0 {
        up
    } else {
        1.0
    };
    w *= scale;
    h *= scale;
    let to16 = |side: f64| ((side / 16.0).round() as u32).max(1) * 16;
    let (mut w, mut h) = (to16(w), to16(h));
    let pixels = |w: u32, h: u32| u64::from(w) * u64::from(h);
    // Rounding may overshoot a limit by a step: move one side by 16 at a time, the one that
    // keeps the ratio nearer, until every limit holds.
    let target = ratio.ln();
    let off = |w: u32, h: u32| ((f64::from(w) / f64::from(h)).ln() - target).abs();
    loop {
        if w.max(h) > GPT_IMAGE_2_MAX_EDGE {
            if w >= h {
                w -= 16;
            } else {
                h -= 16;
            }
        } else if pixels(w, h) > GPT_IMAGE_2_MAX_PIXELS {
            if off(w - 16, h) <= off(w, h - 16) {
                w -= 16;
            } else {
                h -= 16;
            }
        } else if pixels(w, h) < GPT_IMAGE_2_MIN_PIXELS {
            let wider = w + 16 <= GPT_IMAGE_2_MAX_EDGE && off(w + 16, h) <= off(w, h + 16);
            if wider || h + 16 > GPT_IMAGE_2_MAX_EDGE {
                w += 16;
            } else {
                h += 16;
            }
        } else {
            break;
        }
    }
    while w > GPT_IMAGE_2_MAX_RATIO * h {
        w -= 16;
    }
    while h > GPT_IMAGE_2_MAX_RATIO * w {
        h -= 16;
    }
    (w, h)
}

/// The JSON of `POST /images/generations`.
#[derive(Debug, Serialize)]
pub struct GenerationRequest<'a> {
    pub model: &'a str,
    pub prompt: &'a str,
    pub n: u32,
    pub size: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_format: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<&'static str>,
}

impl<'a> GenerationRequest<'a> {
    pub fn new(job: &'a ImageJob, plan: &Plan) -> GenerationRequest<'a> {
        GenerationRequest {
            model: &job.upstream_model,
            prompt: &job.prompt,
            n: 1,
            size: plan.size(),
            quality: plan.quality,
            output_format: plan.output_format,
            response_format: plan.response_format,
        }
    }
}

/// A `multipart/form-data` body for `POST /images/edits`, in memory: the inputs are in memory
/// already, and one buffer keeps the call a single write. Built here rather than with reqwest's
/// `multipart` feature so that part names, file names and types are exactly what OpenAI's SDK
/// sends (research: sdk-wire-formats.md, 1.4), with no extra dependency.
pub struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Default for Multipart {
    fn default() -> Self {
        Multipart::new()
    }
}

impl Multipart {
    pub fn new() -> Multipart {
        Multipart {
            boundary: format!("nano-banana-{}", uuid::Uuid::new_v4().simple()),
            body: Vec::new(),
        }
    }

    /// `multipart/form-data; boundary=…`.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    pub fn text(&mut self, name: &str, value: &str) {
        let mut head = String::new();
        let _ = write!(
            head,
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n",
            self.boundary
        );
        self.body.extend_from_slice(head.as_bytes());
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
    }

    pub fn file(&mut self, name: &str, filename: &str, mime_type: &str, bytes: &[u8]) {
        let mut head = String::new();
        let _ = write!(
            head,
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
             Content-Type: {mime_type}\r\n\r\n",
            self.boundary
        );
        self.body.reserve(head.len() + bytes.len() + 2);
        self.body.extend_from_slice(head.as_bytes());
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        self.body
    }
}

/// The multipart body of `POST /images/edits`: the text fields, then the inputs in request
/// order, each typed by its sniffed mime type. GPT image models get repeated `image[]` parts
/// (what the SDK sends for a list); another model with a single input gets one `image` part (the
/// SDK's form for one file, which every compatible server reads), several `image[]`.
pub fn edit_body(job: &ImageJob, plan: &Plan) -> Multipart {
    let mut form = Multipart::new();
    form.text("prompt", &job.prompt);
    form.text("model", &job.upstream_model);
    form.text("n", "1");
    form.text("size", &plan.size());
    if let Some(quality) = plan.quality {
        form.text("quality", quality);
    }
    if let Some(format) = plan.output_format {
        form.text("output_format", format);
    }
    if let Some(format) = plan.response_format {
        form.text("response_format", format);
    }
    let name = if job.inputs.len() == 1 && !ModelKind::of(&job.upstream_model).is_gpt_image() {
        "image"
    } else {
        "image[]"
    };
    for (i, input) in job.inputs.iter().enumerate() {
        let filename = format!("image-{}.{}", i + 1, extension(input));
        form.file(name, &filename, input.mime_type, &input.bytes);
    }
    form
}

fn extension(input: &InputImage) -> &'static str {
    match input.mime_type {
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "image/heic" => "heic",
        "image/heif" => "heif",
        _ => "png",
    }
}

/// The answer of both endpoints; everything but `data` is ignored.
#[derive(Debug, Deserialize)]
pub struct ImagesResponse {
    #[serde(default)]
    pub data: Vec<ImageData>,
}

#[derive(Debug, Deserialize)]
pub struct ImageData {
    pub b64_json: Option<String>,
    pub url: Option<String>,
}

/// Where the first image of an answer is.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Base64(String),
    Url(String),
}

pub fn first_image(body: &[u8]) -> Result<Found, String> {
    let answer: ImagesResponse = serde_json::from_slice(body)
        .map_err(|e| format!("the answer is not the images JSON: {e}"))?;
    let first = answer
        .data
        .into_iter()
        .next()
        .ok_or_else(|| "the answer's data is empty".to_owned())?;
    match (first.b64_json, first.url) {
        (Some(b64), _) if !b64.is_empty() => Ok(Found::Base64(b64)),
        (_, Some(url)) if !url.is_empty() => Ok(Found::Url(url)),
        _ => Err("data[0] has neither b64_json nor url".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::domain::{AspectRatio, Model};

    fn job(upstream_model: &str, width: u32, height: u32, size: Option<Resolution>) -> ImageJob {
        ImageJob {
            prompt: "p".into(),
            model: "nano-banana-pro".into(),
            upstream_model: upstream_model.into(),
            inputs: Vec::new(),
            aspect_ratio: None,
            image_size: size,
            width,
            height,
        }
    }

    #[test]
    fn model_names_decide_the_kind() {
        for (name, kind) in [
            ("gpt-image-1", ModelKind::GptImage1),
            ("gpt-image-1-mini", ModelKind::GptImage1),
            ("gpt-image-1.5", ModelKind::GptImage1),
            ("chatgpt-image-latest", ModelKind::GptImage1),
            ("gpt-image-2", ModelKind::GptImage2),
            ("gpt-image-2-2026-04-21", ModelKind::GptImage2),
            ("openai/gpt-image-2", ModelKind::GptImage2),
            ("dall-e-3", ModelKind::DallE3),
            ("dall-e-2", ModelKind::DallE2),
            ("stablediffusion", ModelKind::Other),
            ("flux.1-dev", ModelKind::Other),
        ] {
            assert_eq!(ModelKind::of(name), kind, "{name}");
        }
    }

    #[test]
    fn gpt_image_1_takes_the_nearest_of_three_sizes_and_quality_follows_the_resolution() {
        let cases = [
            (AspectRatio::R1x1, (1024, 1024)),
            (AspectRatio::R4x3, (1536, 1024)),
            (AspectRatio::R3x2, (1536, 1024)),
            (AspectRatio::R16x9, (1536, 1024)),
            (AspectRatio::R3x4, (1024, 1536)),
            (AspectRatio::R2x3, (1024, 1536)),
            (AspectRatio::R9x16, (1024, 1536)),
        ];
        for model in ["gpt-image-1", "gpt-image-1.5", "localai-model"] {
            for (ratio, size) in cases {
                for resolution in [Resolution::R1K, Resolution::R2K, Resolution::R4K] {
                    let (w, h) = Model::parse("nano-banana-pro")
                        .unwrap()
                        .pixel_size(ratio, resolution);
                    let plan = Plan::for_job(&job(model, w, h, Some(resolution)));
                    assert_eq!((plan.width, plan.height), size, "{model} {ratio:?}");
                }
            }
        }
        let quality =
            |model: &str, resolution| Plan::for_job(&job(model, 1024, 1024, resolution)).quality;
        assert_eq!(
            quality("gpt-image-1", Some(Resolution::R1K)),
            Some("medium")
        );
        assert_eq!(quality("gpt-image-1", None), Some("medium"));
        assert_eq!(
            quality("gpt-image-1.5", Some(Resolution::R2K)),
            Some("high")
        );
        assert_eq!(quality("gpt-image-2", Some(Resolution::R4K)), Some("high"));
        assert_eq!(quality("dall-e-3", Some(Resolution::R4K)), Some("hd"));
        assert_eq!(quality("localai-model", Some(Resolution::R4K)), None);
    }

    #[test]
    fn response_and_output_formats_go_only_to_the_models_that_take_them() {
        let gpt = Plan::for_job(&job("gpt-image-1", 1024, 1024, None));
        assert_eq!(gpt.response_format, None);
        assert_eq!(gpt.output_format, Some("png"));
        for other in ["dall-e-3", "dall-e-2", "sd-1.5"] {
            let plan = Plan::for_job(&job(other, 1024, 1024, None));
            assert_eq!(plan.response_format, Some("b64_json"), "{other}");
            assert_eq!(plan.output_format, None, "{other}");
        }
        assert_eq!(
            Plan::for_job(&job("dall-e-3", 1376, 768, None)).size(),
            "1792x1024"
        );
        assert_eq!(
            Plan::for_job(&job("dall-e-2", 768, 1376, None)).size(),
            "1024x1024"
        );
    }

    /// Every size a public model makes, mapped for gpt-image-2, is one it accepts and keeps the
    /// ratio within 2 %.
    #[test]
    fn gpt_image_2_sizes_are_valid_and_keep_the_ratio() {
        for model in Model::all() {
            for ratio in AspectRatio::ALL {
                for resolution in [Resolution::R1K, Resolution::R2K, Resolution::R4K] {
                    let (w, h) = model.pixel_size(ratio, resolution);
                    let (sw, sh) = gpt_image_2_size(w, h);
                    let context = format!(
                        "{} {ratio:?} {resolution:?}: {w}x{h} → {sw}x{sh}",
                        model.name()
                    );
                    assert_eq!(sw % 16, 0, "{context}");
                    assert_eq!(sh % 16, 0, "{context}");
                    assert!(sw.max(sh) <= GPT_IMAGE_2_MAX_EDGE, "{context}");
                    let pixels = u64::from(sw) * u64::from(sh);
                    assert!(
                        (GPT_IMAGE_2_MIN_PIXELS..=GPT_IMAGE_2_MAX_PIXELS).contains(&pixels),
                        "{context}"
                    );
                    let asked = f64::from(w) / f64::from(h);
                    let sent = f64::from(sw) / f64::from(sh);
                    assert!((sent / asked - 1.0).abs() < 0.02, "{context}");
                    if u64::from(w) * u64::from(h) <= GPT_IMAGE_2_MAX_PIXELS
                        && w.max(h) <= GPT_IMAGE_2_MAX_EDGE
                    {
                        // Within the limits, the contract's size is sent as it is (every size
                        // of the tables is a multiple of 16 already).
                        assert_eq!((sw, sh), (w, h), "{context}");
                    }
                }
            }
        }
    }

    #[test]
    fn gpt_image_2_sizes_documented_in_the_readme() {
        assert_eq!(gpt_image_2_size(1376, 768), (1376, 768));
        assert_eq!(gpt_image_2_size(2752, 1536), (2752, 1536));
        assert_eq!(gpt_image_2_size(5504, 3072), (3840, 2144));
        assert_eq!(gpt_image_2_size(3072, 5504), (2144, 3840));
        assert_eq!(gpt_image_2_size(4096, 4096), (2880, 2880));
        assert_eq!(gpt_image_2_size(4800, 3584), (3328, 2480));
        assert_eq!(gpt_image_2_size(5056, 3392), (3520, 2352));
        // Outside the contract: extreme ratios are clamped to 3:1, tiny sizes grown.
        let (w, h) = gpt_image_2_size(4000, 100);
        assert!(w <= 3 * h && w % 16 == 0 && h % 16 == 0, "{w}x{h}");
        let (w, h) = gpt_image_2_size(256, 256);
        assert!(
            u64::from(w) * u64::from(h) >= GPT_IMAGE_2_MIN_PIXELS,
            "{w}x{h}"
        );
        assert_eq!(w, h);
    }

    #[test]
    fn generation_json_has_the_planned_fields_only() {
        let job = job("gpt-image-1", 1376, 768, Some(Resolution::R2K));
        let plan = Plan::for_job(&job);
        let json = serde_json::to_value(GenerationRequest::new(&job, &plan)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"model": "gpt-image-1", "prompt": "p", "n": 1,
                "size": "1536x1024", "quality": "high", "output_format": "png"})
        );
    }

    #[test]
    fn edit_bodies_are_multipart_with_typed_image_parts() {
        let input = |mime: &'static str, bytes: &'static [u8]| InputImage {
            bytes: Bytes::from_static(bytes),
            mime_type: mime,
            width: 1,
            height: 1,
        };
        let mut job = job("gpt-image-1", 1024, 1024, None);
        job.prompt = "combine \"both\"".into();
        job.inputs = vec![
            input("image/png", b"PNGDATA"),
            input("image/jpeg", b"JPGDATA"),
        ];
        let plan = Plan::for_job(&job);
        let form = edit_body(&job, &plan);
        let boundary = form.boundary.clone();
        assert!(form.content_type().ends_with(&boundary));
        let body = String::from_utf8(form.finish()).unwrap();
        assert!(
            body.contains("name=\"prompt\"\r\n\r\ncombine \"both\"\r\n"),
            "{body}"
        );
        assert!(body.contains("name=\"model\"\r\n\r\ngpt-image-1\r\n"));
        assert!(body.contains("name=\"size\"\r\n\r\n1024x1024\r\n"));
        assert!(body.contains(
            "name=\"image[]\"; filename=\"image-1.png\"\r\nContent-Type: image/png\r\n\r\nPNGDATA\r\n"
        ));
        assert!(body.contains(
            "name=\"image[]\"; filename=\"image-2.jpg\"\r\nContent-Type: image/jpeg\r\n\r\nJPGDATA\r\n"
        ));
        assert!(!body.contains("response_format"));
        assert!(body.ends_with(&format!("--{boundary}--\r\n")));

        let mut single = job.clone();
        single.upstream_model = "localai".into();
        single.inputs.truncate(1);
        let body = String::from_utf8(edit_body(&single, &Plan::for_job(&single)).finish()).unwrap();
        assert!(
            body.contains("name=\"image\"; filename=\"image-1.png\""),
            "{body}"
        );
        assert!(body.contains("name=\"response_format\"\r\n\r\nb64_json\r\n"));
    }

    #[test]
    fn answers_give_base64_or_a_url() {
        assert_eq!(
            first_image(br#"{"created": 1, "data": [{"b64_json": "QUJD"}]}"#),
            Ok(Found::Base64("QUJD".into()))
        );
        assert_eq!(
            first_image(br#"{"data": [{"url": "https://x/y.png", "revised_prompt": "r"}]}"#),
            Ok(Found::Url("https://x/y.png".into()))
        );
        assert!(first_image(br#"{"data": []}"#).is_err());
        assert!(first_image(br#"{"data": [{}]}"#).is_err());
        assert!(first_image(b"<html>").is_err());
    }
}
