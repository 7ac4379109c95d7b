//! The public model names of the contract and what each implies for sizes. Which upstream serves a
//! name is configuration (`providers::Routes`), not code.

use super::{AspectRatio, Resolution};

/// The model families behind the public names. Pixel sizes differ between Gemini 2.5 Flash Image
/// and the 3.x image models (docs/upstreams.md, Gemini models and sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    NanoBanana,
    NanoBanana2Lite,
    NanoBanana2,
    NanoBanana21,
    NanoBananaPro,
}

/// A known public model name, e.g. `nano-banana-pro` or `nano-banana-2:official`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Model {
    family: Family,
    official: bool,
}

const NAMES: [(&str, Family, bool); 9] = [
    ("nano-banana", Family::NanoBanana, false),
    ("nano-banana-2-lite", Family::NanoBanana2Lite, false),
    ("nano-banana-2", Family::NanoBanana2, false),
    ("nano-banana-2.1", Family::NanoBanana21, false),
    ("nano-banana-pro", Family::NanoBananaPro, false),
    ("nano-banana:official", Family::NanoBanana, true),
    ("nano-banana-2-lite:official", Family::NanoBanana2Lite, true),
    ("nano-banana-2:official", Family::NanoBanana2, true),
    ("nano-banana-pro:official", Family::NanoBananaPro, true),
];

impl Default for Model {
    fn default() -> Self {
        Model {
            family: Family::NanoBanana,
            official: false,
        }
    }
}

impl Model {
    pub fn parse(name: &str) -> Option<Model> {
        NAMES
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, family, official)| Model { family, official })
    }

    /// Every known public name, in the contract's order.
    pub fn all() -> impl Iterator<Item = Model> {
        NAMES
            .iter()
            .map(|&(_, family, official)| Model { family, official })
    }

    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, f, o)| *f == self.family && *o == self.official)
            .map(|(n, _, _)| *n)
            .unwrap_or("nano-banana")
    }

    pub fn family(self) -> Family {
        self.family
    }

    /// `:official` names are routed to a separately configured upstream.
    pub fn is_official(self) -> bool {
        self.official
    }

    /// `nano-banana` and `nano-banana-2-lite` make 1K images only.
    pub fn supports_resolution_choice(self) -> bool {
        !matches!(self.family, Family::NanoBanana | Family::NanoBanana2Lite)
    }

    /// The upstream model id the contract maps this name to by default.
    pub fn default_upstream_model(self) -> &'static str {
        match self.family {
            Family::NanoBanana => "gemini-2.5-flash-image",
            Family::NanoBanana2Lite => "gemini-3.1-flash-lite-image",
            Family::NanoBanana2 => "gemini-3.1-flash-image",
            Family::NanoBanana21 => "gemini-nano-banana-2.1",
            Family::NanoBananaPro => "gemini-3-pro-image",
        }
    }

    /// The pixel size the upstream makes for this ratio and resolution (docs/upstreams.md,
    /// Gemini models and sizes).
    pub fn pixel_size(self, ratio: AspectRatio, resolution: Resolution) -> (u32, u32) {
        if self.family == Family::NanoBanana {
            // Gemini 2.5 Flash Image has a single size per ratio.
            return match ratio {
                AspectRatio::R1x1 => (1024, 1024),
                AspectRatio::R2x3 => (832, 1248),
                AspectRatio::R3x2 => (1248, 832),
                AspectRatio::R3x4 => (864, 1184),
                AspectRatio::R4x3 => (1184, 864),
                AspectRatio::R9x16 => (768, 1344),
                AspectRatio::R16x9 => (1344, 768),
            };
        }
        let (w, h) = match ratio {
            AspectRatio::R1x1 => (1024, 1024),
            AspectRatio::R2x3 => (848, 1264),
            AspectRatio::R3x2 => (1264, 848),
            AspectRatio::R3x4 => (896, 1200),
            AspectRatio::R4x3 => (1200, 896),
            AspectRatio::R9x16 => (768, 1376),
            AspectRatio::R16x9 => (1376, 768),
        };
        let scale = match resolution {
            Resolution::R1K => 1,
            Resolution::R2K => 2,
            Resolution::R4K => 4,
        };
        (w * scale, h * scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for model in Model::all() {
            assert_eq!(Model::parse(model.name()), Some(model));
        }
        assert_eq!(Model::all().count(), 9);
        assert!(Model::parse("nano-banana-2.1:official").is_none());
    }

    #[test]
    fn sizes_follow_the_upstream_tables() {
        let nb = Model::parse("nano-banana").unwrap();
        let pro = Model::parse("nano-banana-pro").unwrap();
        assert_eq!(
            nb.pixel_size(AspectRatio::R16x9, Resolution::R1K),
            (1344, 768)
        );
        assert_eq!(
            pro.pixel_size(AspectRatio::R16x9, Resolution::R1K),
            (1376, 768)
        );
        assert_eq!(
            pro.pixel_size(AspectRatio::R1x1, Resolution::R4K),
            (4096, 4096)
        );
        assert_eq!(
            pro.pixel_size(AspectRatio::R3x2, Resolution::R2K),
            (2528, 1696)
        );
    }
}
