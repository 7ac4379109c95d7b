//! The image models the fake knows (docs/upstreams.md, Gemini models and sizes): their ids, the
//! aspect ratios, sizes and input counts each accepts, the pixel size of each answer and its
//! token count. Not here: answering the request (`handler`).

use super::handler::ParsedRequest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ModelFamily {
    /// `gemini-2.5-flash-image*`: fixed 1K, no `imageSize`, 10 ratios, ≤ 3 inputs.
    Flash25,
    /// `gemini-3-pro-image*`: 1K/2K/4K, 10 ratios.
    Pro3,
    /// `gemini-3.1-flash-image*`: 512/1K/2K/4K, 14 ratios.
    Flash31,
    /// `gemini-3.1-flash-lite-image`: 512/1K, 14 ratios.
    Lite31,
    /// `gemini-nano-banana-2.1`: 1K/2K/4K, 14 ratios.
    NanoBanana21,
}

const CLASSIC_RATIOS: [&str; 10] = [
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
];
const EXTREME_RATIOS: [&str; 4] = ["1:4", "4:1", "1:8", "8:1"];

impl ModelFamily {
    /// Retired preview ids are still accepted so old configurations keep working here.
    pub(super) fn of(model: &str) -> Option<ModelFamily> {
        Some(match model {
            "gemini-2.5-flash-image" | "gemini-2.5-flash-image-preview" => ModelFamily::Flash25,
            "gemini-3-pro-image" | "gemini-3-pro-image-preview" | "nano-banana-pro-preview" => {
                ModelFamily::Pro3
            }
            "gemini-3.1-flash-image" | "gemini-3.1-flash-image-preview" => ModelFamily::Flash31,
            "gemini-3.1-flash-lite-image" => ModelFamily::Lite31,
            "gemini-nano-banana-2.1" => ModelFamily::NanoBanana21,
            _ => return None,
        })
    }

    fn sizes(self) -> &'static [&'static str] {
        match self {
            ModelFamily::Flash25 => &[],
            ModelFamily::Pro3 | ModelFamily::NanoBanana21 => &["1K", "2K", "4K"],
            ModelFamily::Flash31 => &["512", "1K", "2K", "4K"],
            ModelFamily::Lite31 => &["512", "1K"],
        }
    }

    pub(super) fn check(self, request: &ParsedRequest) -> Result<(), String> {
        if request.prompt.is_empty() && request.inputs == 0 {
            return Err("* GenerateContentRequest.contents: contents is not specified".to_owned());
        }
        let max_inputs = if self == ModelFamily::Flash25 { 3 } else { 14 };
        if request.inputs > max_inputs {
            return Err(format!(
                "Too many input images: {} (this model accepts at most {max_inputs}).",
                request.inputs
            ));
        }
        if let Some(ratio) = request.aspect_ratio.as_deref() {
            let extremes = !matches!(self, ModelFamily::Flash25 | ModelFamily::Pro3);
            let known =
                CLASSIC_RATIOS.contains(&ratio) || (extremes && EXTREME_RATIOS.contains(&ratio));
            if !known {
                return Err(format!("Unsupported aspect ratio: {ratio}."));
            }
        }
        if let Some(size) = request.image_size.as_deref() {
            if self == ModelFamily::Flash25 {
                return Err("Image size is not supported for this model.".to_owned());
            }
            if !self.sizes().contains(&size) {
                return Err(format!("Unsupported image size: {size}."));
            }
        }
        Ok(())
    }

    /// Pixel size per docs/upstreams.md, Gemini models and sizes. Without an aspect ratio (an
    /// edit that follows its first input) the fake answers 1:1: it does not decode inputs.
    pub(super) fn dimensions(self, ratio: Option<&str>, size: Option<&str>) -> (u32, u32) {
        let ratio = ratio.unwrap_or("1:1");
        if self == ModelFamily::Flash25 {
            return match ratio {
                "2:3" => (832, 1248),
                "3:2" => (1248, 832),
                "3:4" => (864, 1184),
                "4:3" => (1184, 864),
                "4:5" => (896, 1152),
                "5:4" => (1152, 896),
                "9:16" => (768, 1344),
                "16:9" => (1344, 768),
                "21:9" => (1536, 672),
                _ => (1024, 1024),
            };
        }
        let (w, h) = match ratio {
            "1:4" => (512, 2048),
            "1:8" => (384, 3072),
            "2:3" => (848, 1264),
            "3:2" => (1264, 848),
            "3:4" => (896, 1200),
            "4:1" => (2048, 512),
            "4:3" => (1200, 896),
            "4:5" => (928, 1152),
            "5:4" => (1152, 928),
            "8:1" => (3072, 384),
            "9:16" => (768, 1376),
            "16:9" => (1376, 768),
            // The doc's 512 row says 792x168, an evident typo for half of 1584x672.
            "21:9" => (1584, 672),
            _ => (1024, 1024),
        };
        // Every row of the 3.x table is the 1K size scaled by ½, 2 or 4.
        match size {
            Some("512") => (w / 2, h / 2),
            Some("2K") => (w * 2, h * 2),
            Some("4K") => (w * 4, h * 4),
            _ => (w, h),
        }
    }

    pub(super) fn image_tokens(self, size: Option<&str>) -> u32 {
        match (self, size) {
            (ModelFamily::Flash25, _) => 1290,
            (ModelFamily::Pro3, Some("4K")) => 2000,
            (ModelFamily::Pro3, _) => 1120,
            (_, Some("512")) => 747,
            (_, Some("2K")) => 1680,
            (_, Some("4K")) => 2520,
            _ => 1120,
        }
    }
}
