//! The PNGs the fake answers with: one cached encode per pixel size, in one colour or padded
//! with noise to a requested weight. Not here: which size a request gets (`models`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use image::ImageEncoder as _;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use tokio::sync::OnceCell;

use super::lock;

pub(super) const SOLID_RGB: [u8; 3] = [250, 220, 60];
pub(super) const THOUGHT_RGB: [u8; 3] = [128, 128, 128];

type ImageCell = OnceCell<Arc<EncodedImage>>;

pub(super) struct EncodedImage {
    pub(super) base64: String,
}

/// One encoded PNG per pixel size, made once on a blocking thread; concurrent first requests
/// for the same size wait for the same encode instead of each allocating the raw pixels.
pub(super) struct ImageCache {
    target_bytes: usize,
    cells: Mutex<HashMap<(u32, u32), Arc<ImageCell>>>,
}

impl ImageCache {
    pub(super) fn new(target_bytes: usize) -> ImageCache {
        ImageCache {
            target_bytes,
            cells: Mutex::new(HashMap::new()),
        }
    }

    pub(super) async fn get(&self, width: u32, height: u32) -> Result<Arc<EncodedImage>, String> {
        let cell = lock(&self.cells)
            .entry((width, height))
            .or_default()
            .clone();
        let target = self.target_bytes;
        let image = cell
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || encode_png(width, height, target, SOLID_RGB))
                    .await
                    .map_err(|err| format!("fake: image encoder failed: {err}"))?
                    .map(Arc::new)
            })
            .await?;
        Ok(image.clone())
    }
}

/// A PNG of `width`×`height` in one colour, or, when `target_bytes` > 0, with enough rows of
/// noise (which deflate cannot shrink) to weigh about `target_bytes`.
pub(super) fn encode_png(
    width: u32,
    height: u32,
    target_bytes: usize,
    rgb: [u8; 3],
) -> Result<EncodedImage, String> {
    let (width, height, noise_rows) = plan_png(width, height, target_bytes);
    let mut png = png_with_noise(width, height, noise_rows, rgb)?;
    if target_bytes > 0 && noise_rows < height {
        // Solid rows are not free and their cost shifts with the noise around them, so the
        // first guess is off by tens of KiB; a few measured corrections land within a row or
        // two of the target. This runs once per pixel size.
        let row_cost = i64::from(width) * 3 + 1;
        let mut rows = i64::from(noise_rows);
        for _ in 0..4 {
            let missing_rows = (target_bytes as i64 - png.len() as i64) / row_cost;
            let corrected = (rows + missing_rows).clamp(0, i64::from(height));
            if corrected == rows {
                break;
            }
            rows = corrected;
            png = png_with_noise(width, height, u32::try_from(rows).unwrap_or(height), rgb)?;
        }
    }
    Ok(EncodedImage {
        base64: BASE64.encode(&png),
    })
}

fn png_with_noise(
    width: u32,
    height: u32,
    noise_rows: u32,
    rgb: [u8; 3],
) -> Result<Vec<u8>, String> {
    let row_len = width as usize * 3;
    let total = row_len * height as usize;
    let mut raw = vec![0u8; row_len * noise_rows as usize];
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ (u64::from(width) << 32 | u64::from(height));
    for chunk in raw.chunks_mut(8) {
        // xorshift64*: plenty random for deflate, far cheaper than a real RNG.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let bytes = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let solid_row: Vec<u8> = rgb.iter().copied().cycle().take(row_len).collect();
    raw.reserve_exact(total - raw.len());
    while raw.len() < total {
        raw.extend_from_slice(&solid_row);
    }
    let mut png = Vec::new();
    // The fast compressor only shrinks runs of zero bytes; the Up filter turns every solid row
    // after the first into zeros, and leaves noise as incompressible as it was.
    PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::Up)
        .write_image(&raw, width, height, image::ExtendedColorType::Rgb8)
        .map_err(|err| format!("fake: PNG encoding failed: {err}"))?;
    Ok(png)
}

/// (width, height, rows of noise) for a PNG of about `target_bytes`.
fn plan_png(width: u32, height: u32, target_bytes: usize) -> (u32, u32, u32) {
    if target_bytes == 0 {
        return (width, height, 0);
    }
    // Each noise row costs its bytes plus the filter byte; solid rows cost next to nothing.
    let row_cost = width as usize * 3 + 1;
    let full = row_cost * height as usize;
    if target_bytes <= full {
        let rows = (target_bytes / row_cost).max(1);
        return (
            width,
            height,
            u32::try_from(rows).unwrap_or(height).min(height),
        );
    }
    let scale = (target_bytes as f64 / full as f64).sqrt();
    let w = ((f64::from(width) * scale).round() as u32).max(1);
    let h = ((f64::from(height) * scale).round() as u32).max(1);
    (w, h, h)
}
