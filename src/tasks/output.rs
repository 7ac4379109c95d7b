//! What the model made, turned into what the client asked for before it is stored: another file
//! format (`output_format`, JPEG at `output_compression` quality), and for an edit with a mask,
//! the first input image kept wherever the mask is opaque. Pixel work, so it runs on the
//! blocking pool; an image that needs neither is stored as the model made it, untouched.

use std::{io::Cursor, sync::Arc};

use bytes::Bytes;
use image::{
    DynamicImage, RgbaImage,
    codecs::{jpeg::JpegEncoder, png::PngEncoder, webp::WebPEncoder},
    imageops::FilterType,
};

use crate::{
    domain::{OutputFormat, OutputOptions},
    providers::{GeneratedImage, InputImage},
};

/// JPEG quality when the client gave no `output_compression`.
const DEFAULT_JPEG_QUALITY: u8 = 90;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "the mask must be a PNG the size of the first image ({width}x{height}); it is {mask_width}x{mask_height}"
    )]
    MaskSize {
        width: u32,
        height: u32,
        mask_width: u32,
        mask_height: u32,
    },
    #[error("the mask must be a PNG (its transparent pixels mark where the image may change)")]
    MaskNotPng,
    #[error("could not decode an image: {0}")]
    Decode(String),
    #[error("could not encode the image: {0}")]
    Encode(String),
}

/// An edit's mask, decoded once per task and shared by its images: the first input image, and
/// how much of it to keep at each pixel (the mask's alpha: opaque keeps, transparent changes).
pub struct Mask {
    original: RgbaImage,
    keep: Vec<u8>,
}

impl Mask {
    /// Decodes the first input image and the mask, which must be a PNG of the same size.
    pub fn new(first: &InputImage, mask: &InputImage) -> Result<Mask, OutputError> {
        if mask.mime_type != "image/png" {
            return Err(OutputError::MaskNotPng);
        }
        if (mask.width, mask.height) != (first.width, first.height) {
            return Err(OutputError::MaskSize {
                width: first.width,
                height: first.height,
                mask_width: mask.width,
                mask_height: mask.height,
            });
        }
        let original = decode(&first.bytes)?.to_rgba8();
        let keep = decode(&mask.bytes)?
            .to_rgba8()
            .pixels()
            .map(|p| p.0[3])
            .collect();
        Ok(Mask { original, keep })
    }
}

/// What to do to each made image.
#[derive(Clone, Default)]
pub struct Finishing {
    pub output: OutputOptions,
    pub mask: Option<Arc<Mask>>,
}

impl Finishing {
    /// Whether `image` can be stored as it is.
    fn leaves_alone(&self, image: &GeneratedImage) -> bool {
        self.mask.is_none()
            && self
                .output
                .format
                .is_none_or(|format| OutputFormat::of_mime(&image.mime_type) == Some(format))
    }

    /// The image to store. Call from the blocking pool unless `leaves_alone`.
    pub fn apply(&self, image: GeneratedImage) -> Result<GeneratedImage, OutputError> {
        if self.leaves_alone(&image) {
            return Ok(image);
        }
        let mut pixels = decode(&image.bytes)?;
        if let Some(mask) = &self.mask {
            pixels = DynamicImage::ImageRgba8(composite(&pixels, mask));
        }
        let format = self
            .output
            .format
            .or_else(|| OutputFormat::of_mime(&image.mime_type))
            .unwrap_or(OutputFormat::Png);
        let bytes = encode(&pixels, format, self.output.compression)?;
        Ok(GeneratedImage {
            bytes,
            mime_type: format.mime_type().to_owned(),
        })
    }
}

/// The made image at the original's size, with the original kept where the mask is opaque
/// (blended where it is partly transparent).
fn composite(made: &DynamicImage, mask: &Mask) -> RgbaImage {
    let (width, height) = mask.original.dimensions();
    let made = image::imageops::resize(&made.to_rgba8(), width, height, FilterType::Triangle);
    let mut out = made;
    for ((pixel, original), keep) in out
        .pixels_mut()
        .zip(mask.original.pixels())
        .zip(mask.keep.iter())
    {
        let keep = u16::from(*keep);
        for channel in 0..4 {
            let new = u16::from(pixel.0[channel]);
            let old = u16::from(original.0[channel]);
            pixel.0[channel] = ((new * (255 - keep) + old * keep + 127) / 255) as u8;
        }
    }
    out
}

fn decode(bytes: &[u8]) -> Result<DynamicImage, OutputError> {
    image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| OutputError::Decode(e.to_string()))?
        .decode()
        .map_err(|e| OutputError::Decode(e.to_string()))
}

fn encode(
    pixels: &DynamicImage,
    format: OutputFormat,
    compression: Option<u8>,
) -> Result<Bytes, OutputError> {
    let mut out = Vec::new();
    let written = match format {
        OutputFormat::Png => pixels.write_with_encoder(PngEncoder::new(&mut out)),
        // JPEG has no alpha: the image is flattened first.
        OutputFormat::Jpeg => DynamicImage::ImageRgb8(pixels.to_rgb8()).write_with_encoder(
            JpegEncoder::new_with_quality(&mut out, compression.unwrap_or(DEFAULT_JPEG_QUALITY)),
        ),
        // The image crate encodes WebP losslessly only: `output_compression` does not apply.
        OutputFormat::Webp => pixels.write_with_encoder(WebPEncoder::new_lossless(&mut out)),
    };
    written.map_err(|e| OutputError::Encode(e.to_string()))?;
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use image::ImageFormat;

    use super::*;

    fn format_of(bytes: &[u8]) -> Option<ImageFormat> {
        image::guess_format(bytes).ok()
    }

    fn png(width: u32, height: u32, colour: [u8; 4]) -> Bytes {
        let image = RgbaImage::from_pixel(width, height, image::Rgba(colour));
        encode(&DynamicImage::ImageRgba8(image), OutputFormat::Png, None).unwrap()
    }

    fn input(bytes: Bytes, width: u32, height: u32) -> InputImage {
        InputImage {
            bytes,
            mime_type: "image/png",
            width,
            height,
        }
    }

    fn made(bytes: Bytes) -> GeneratedImage {
        GeneratedImage {
            bytes,
            mime_type: "image/png".into(),
        }
    }

    #[test]
    fn an_image_that_needs_nothing_is_stored_untouched() {
        let bytes = png(4, 4, [1, 2, 3, 255]);
        let finishing = Finishing {
            output: OutputOptions {
                format: Some(OutputFormat::Png),
                compression: None,
            },
            mask: None,
        };
        let out = finishing.apply(made(bytes.clone())).unwrap();
        assert_eq!(out.bytes, bytes);
    }

    #[test]
    fn jpeg_and_webp_are_encoded_as_asked() {
        for (format, expected) in [
            (OutputFormat::Jpeg, ImageFormat::Jpeg),
            (OutputFormat::Webp, ImageFormat::WebP),
        ] {
            let finishing = Finishing {
                output: OutputOptions {
                    format: Some(format),
                    compression: Some(50),
                },
                mask: None,
            };
            let out = finishing
                .apply(made(png(8, 6, [200, 10, 10, 255])))
                .unwrap();
            assert_eq!(out.mime_type, format.mime_type());
            assert_eq!(format_of(&out.bytes), Some(expected));
            let decoded = decode(&out.bytes).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (8, 6));
        }
    }

    #[test]
    fn a_mask_keeps_the_original_where_it_is_opaque() {
        // Original red 4x2; the mask keeps the left half (opaque), frees the right (transparent).
        let original = input(png(4, 2, [255, 0, 0, 255]), 4, 2);
        let mut mask = RgbaImage::from_pixel(4, 2, image::Rgba([0, 0, 0, 255]));
        for y in 0..2 {
            for x in 2..4 {
                mask.put_pixel(x, y, image::Rgba([0, 0, 0, 0]));
            }
        }
        let mask_png = encode(&DynamicImage::ImageRgba8(mask), OutputFormat::Png, None).unwrap();
        let mask = Mask::new(&original, &input(mask_png, 4, 2)).unwrap();
        let finishing = Finishing {
            output: OutputOptions::default(),
            mask: Some(Arc::new(mask)),
        };
        // The model made a blue image of another size: it is scaled to the original's.
        let out = finishing.apply(made(png(8, 4, [0, 0, 255, 255]))).unwrap();
        let out = decode(&out.bytes).unwrap().to_rgba8();
        assert_eq!(out.dimensions(), (4, 2));
        assert_eq!(out.get_pixel(0, 0).0, [255, 0, 0, 255], "kept");
        assert_eq!(out.get_pixel(3, 1).0, [0, 0, 255, 255], "changed");
    }

    #[test]
    fn a_mask_of_another_size_or_type_is_refused() {
        let original = input(png(4, 2, [255, 0, 0, 255]), 4, 2);
        let small = input(png(2, 2, [0, 0, 0, 0]), 2, 2);
        assert!(matches!(
            Mask::new(&original, &small),
            Err(OutputError::MaskSize { .. })
        ));
        let jpeg = InputImage {
            mime_type: "image/jpeg",
            ..input(png(4, 2, [0, 0, 0, 0]), 4, 2)
        };
        assert!(matches!(
            Mask::new(&original, &jpeg),
            Err(OutputError::MaskNotPng)
        ));
    }
}
