//! The offline "placeholder" provider: when no upstream key is configured, every job is answered
//! with a PNG drawn here, at exactly the requested size, so the whole API works without a network.
//!
//! The picture says plainly that it is a placeholder (a banner, the model and the size), shows the
//! prompt and, for an edit, the input images. It is deterministic: the same job gives the same
//! bytes on the same machine, because the colours come from a fixed hash (FNV-1a) of the model and
//! the prompt, and nothing random or time-dependent goes in.
//!
//! Text uses system fonts found once under the usual font folders (DejaVu for Latin, a CJK font
//! when one is installed), then `font8x8`'s bundled bitmap glyphs, then a visible box, so a prompt
//! in any script renders without error on any machine. No layout engine: no shaping, no
//! right-to-left, no kerning; this is a label, not typography.
//!
//! Not here: choosing when to use the placeholder (configuration) and sizes (the caller computes
//! `width`/`height`).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ab_glyph::{Font, FontVec, GlyphId, PxScale, ScaleFont, point};
use bytes::Bytes;
use font8x8::UnicodeFonts;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder, ImageReader, Limits, RgbImage, RgbaImage};

use super::{GeneratedImage, ImageJob, ImageProvider, InputImage, ProviderError};
use crate::domain::MAX_IMAGE_SIDE;

/// The most pixels we draw: a bit over 4K's 5504x3072 and 12288x1536, about 72 MiB as RGB.
pub const MAX_PIXELS: u64 = 24 * 1024 * 1024;

/// Caps what decoding one input image may allocate; larger inputs become a labelled box.
const INPUT_MAX_ALLOC: u64 = 256 * 1024 * 1024;
/// A font file larger than this is not a font we want in memory for a label.
const FONT_MAX_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PlaceholderError {
    /// A side of zero pixels: the caller computed a size it should have rejected.
    #[error("cannot draw a {width}x{height} image: both sides must be at least 1 pixel")]
    EmptySize { width: u32, height: u32 },
    /// Over [`MAX_IMAGE_SIDE`] or [`MAX_PIXELS`]: refused rather than allocate without bound.
    #[error(
        "cannot draw a {width}x{height} image: the placeholder draws at most {MAX_IMAGE_SIDE} pixels a side and {MAX_PIXELS} in all"
    )]
    TooLarge { width: u32, height: u32 },
    /// The PNG encoder failed (in practice only if memory runs out).
    #[error("could not encode the placeholder PNG: {0}")]
    Encode(#[from] image::ImageError),
}

/// The provider used when no upstream is configured. Stateless: fonts are loaded once per
/// process, lazily, on the first image.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlaceholderProvider;

impl PlaceholderProvider {
    pub fn new() -> Self {
        PlaceholderProvider
    }
}

#[async_trait::async_trait]
impl ImageProvider for PlaceholderProvider {
    fn name(&self) -> &'static str {
        "placeholder"
    }

    async fn generate(&self, job: &ImageJob) -> Result<GeneratedImage, ProviderError> {
        // Drawing and encoding a 4K PNG takes long enough to stall a runtime worker.
        let job = job.clone();
        let png = tokio::task::spawn_blocking(move || render_png(&job))
            .await
            .map_err(|e| ProviderError::NoImage(format!("the placeholder renderer failed: {e}")))?
            .map_err(|e| ProviderError::NoImage(e.to_string()))?;
        Ok(GeneratedImage {
            bytes: Bytes::from(png),
            mime_type: "image/png".to_owned(),
        })
    }
}

/// Draws the placeholder for `job` as a PNG of exactly `job.width` x `job.height` pixels.
pub fn render_png(job: &ImageJob) -> Result<Vec<u8>, PlaceholderError> {
    let png = render_with(job, system_fonts())?;
    tracing::info!(
        placeholder = true,
        model = %job.model,
        upstream_model = %job.upstream_model,
        width = job.width,
        height = job.height,
        inputs = job.inputs.len(),
        bytes = png.len(),
        "rendered a placeholder image; no upstream model was called"
    );
    Ok(png)
}

fn render_with(job: &ImageJob, fonts: &Fonts) -> Result<Vec<u8>, PlaceholderError> {
    let (width, height) = (job.width, job.height);
    if width == 0 || height == 0 {
        return Err(PlaceholderError::EmptySize { width, height });
    }
    // Gemini's widest sizes (8:1 at 4K) are 12288 pixels long, well within the side limit.
    if width > MAX_IMAGE_SIDE
        || height > MAX_IMAGE_SIDE
        || u64::from(width) * u64::from(height) > MAX_PIXELS
    {
        return Err(PlaceholderError::TooLarge { width, height });
    }

    let mut canvas = RgbImage::new(width, height);
    let palette = Palette::for_job(job);
    fill_background(&mut canvas, &palette);

    let layout = Layout::new(width, height);
    draw_banner(&mut canvas, fonts, &layout);
    draw_footer(&mut canvas, fonts, &layout, &footer_text(job));

    let middle = layout.middle;
    let prompt_area = if job.inputs.is_empty() {
        middle
    } else {
        // Inputs above, prompt below: the inputs are what the edit starts from.
        let gap = layout.margin;
        let thumbs_h = (middle.h - gap) * 11 / 20;
        let thumbs = Rect::new(middle.x, middle.y, middle.w, thumbs_h);
        draw_inputs(&mut canvas, fonts, &job.inputs, thumbs, layout.unit);
        Rect::new(
            middle.x,
            middle.y + thumbs_h + gap,
            middle.w,
            middle.h - thumbs_h - gap,
        )
    };
    draw_prompt(&mut canvas, fonts, &job.prompt, prompt_area, layout.unit);

    let mut png = Vec::new();
    // Fast deflate keeps a 4K encode well under a second; the adaptive filter makes the smooth
    // gradient compress well anyway.
    PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::Adaptive)
        .write_image(canvas.as_raw(), width, height, ExtendedColorType::Rgb8)?;
    Ok(png)
}

fn footer_text(job: &ImageJob) -> String {
    let mut text = format!("{} · {}×{}", job.model, job.width, job.height);
    if let Some(ratio) = job.aspect_ratio {
        text.push_str(" · ");
        text.push_str(ratio.as_str());
    }
    if let Some(size) = job.image_size {
        text.push_str(" · ");
        text.push_str(size.as_str());
    }
    match job.inputs.len() {
        0 => {}
        1 => text.push_str(" · edit of 1 image"),
        n => text.push_str(&format!(" · edit of {n} images")),
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Colours and background

type Color = [u8; 3];

const TEXT: Color = [246, 246, 246];
const BAR: Color = [22, 22, 26];
const AMBER: Color = [255, 193, 7];
const MUTED: Color = [200, 200, 205];

struct Palette {
    from: Color,
    to: Color,
    /// Which diagonal the gradient runs along.
    flip: bool,
}

impl Palette {
    fn for_job(job: &ImageJob) -> Palette {
        let mut bytes = Vec::with_capacity(job.model.len() + 1 + job.prompt.len());
        bytes.extend_from_slice(job.model.as_bytes());
        // A separator so ("ab", "c") and ("a", "bc") differ.
        bytes.push(0);
        bytes.extend_from_slice(job.prompt.as_bytes());
        let hash = fnv1a64(&bytes);
        let hue = (hash % 360) as f32;
        let spread = 40.0 + ((hash >> 16) % 100) as f32;
        Palette {
            // Mid-dark tones, so white text on a darkened panel and the dark bars both read well.
            from: hsl_to_rgb(hue, 0.55, 0.45),
            to: hsl_to_rgb((hue + spread) % 360.0, 0.60, 0.28),
            flip: (hash >> 40) & 1 == 1,
        }
    }
}

/// FNV-1a, 64 bits. Written out because std's `DefaultHasher` may change between releases, and
/// the colours of a given prompt should not.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn hsl_to_rgb(hue: f32, saturation: f32, lightness: f32) -> Color {
    let c = (1.0 - (2.0 * lightness - 1.0).abs()) * saturation;
    let h = hue / 60.0;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = lightness - c / 2.0;
    let to_u8 = |v: f32| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    [to_u8(r), to_u8(g), to_u8(b)]
}

/// A diagonal gradient with faint diagonal bands. Per pixel this is two table look-ups and an
/// add, so it stays cheap even in unoptimised test builds.
fn fill_background(canvas: &mut RgbImage, palette: &Palette) {
    let (w, h) = canvas.dimensions();
    // The gradient position is col_t[x] + row_t[y], 0..=510, looked up in a 511-entry table.
    let lut: Vec<Color> = (0..=510u32)
        .map(|t| {
            let mix =
                |a: u8, b: u8| ((u32::from(a) * (510 - t) + u32::from(b) * t + 255) / 510) as u8;
            [
                mix(palette.from[0], palette.to[0]),
                mix(palette.from[1], palette.to[1]),
                mix(palette.from[2], palette.to[2]),
            ]
        })
        .collect();
    let ramp = |i: u32, n: u32| {
        if n <= 1 {
            0
        } else {
            (u64::from(i) * 255 / u64::from(n - 1)) as usize
        }
    };
    let col_t: Vec<usize> = (0..w)
        .map(|x| {
            if palette.flip {
                255 - ramp(x, w)
            } else {
                ramp(x, w)
            }
        })
        .collect();
    let band = (w.min(h) / 10).max(4) as usize;

    for (y, row) in canvas.as_mut().chunks_exact_mut(w as usize * 3).enumerate() {
        let row_t = ramp(y as u32, h);
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let [r, g, b] = lut[col_t[x] + row_t];
            // Bands run the other way from the gradient, like the stripes on a sign.
            let lift = if ((x + y) / band).is_multiple_of(2) {
                7
            } else {
                0
            };
            px[0] = r.saturating_add(lift);
            px[1] = g.saturating_add(lift);
            px[2] = b.saturating_add(lift);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry and pixel helpers

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x: i32,
    y: i32,
    w: i32,
    h: i32,
}

impl Rect {
    fn new(x: i32, y: i32, w: i32, h: i32) -> Rect {
        Rect {
            x,
            y,
            w: w.max(0),
            h: h.max(0),
        }
    }

    fn inset(self, by: i32) -> Rect {
        Rect::new(self.x + by, self.y + by, self.w - 2 * by, self.h - 2 * by)
    }

    /// The part of this rectangle inside a `w` x `h` canvas, as pixel ranges.
    fn clipped(self, w: u32, h: u32) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
        let x0 = self.x.clamp(0, w as i32) as usize;
        let y0 = self.y.clamp(0, h as i32) as usize;
        let x1 = (self.x.saturating_add(self.w)).clamp(0, w as i32) as usize;
        let y1 = (self.y.saturating_add(self.h)).clamp(0, h as i32) as usize;
        (x0 < x1 && y0 < y1).then_some((x0..x1, y0..y1))
    }
}

fn fill_rect(canvas: &mut RgbImage, rect: Rect, color: Color) {
    let (w, h) = canvas.dimensions();
    let Some((xs, ys)) = rect.clipped(w, h) else {
        return;
    };
    let stride = w as usize * 3;
    let buf: &mut [u8] = canvas.as_mut();
    for y in ys {
        for px in buf[y * stride + xs.start * 3..y * stride + xs.end * 3].chunks_exact_mut(3) {
            px.copy_from_slice(&color);
        }
    }
}

/// Multiplies the pixels under `rect` by `keep`/256: a translucent dark panel behind text.
fn darken_rect(canvas: &mut RgbImage, rect: Rect, keep: u16) {
    let (w, h) = canvas.dimensions();
    let Some((xs, ys)) = rect.clipped(w, h) else {
        return;
    };
    let stride = w as usize * 3;
    let buf: &mut [u8] = canvas.as_mut();
    for y in ys {
        for v in &mut buf[y * stride + xs.start * 3..y * stride + xs.end * 3] {
            *v = ((u16::from(*v) * keep) >> 8) as u8;
        }
    }
}

fn stroke_rect(canvas: &mut RgbImage, rect: Rect, thickness: i32, color: Color) {
    let t = thickness.max(1).min(rect.w).min(rect.h);
    fill_rect(canvas, Rect::new(rect.x, rect.y, rect.w, t), color);
    fill_rect(
        canvas,
        Rect::new(rect.x, rect.y + rect.h - t, rect.w, t),
        color,
    );
    fill_rect(canvas, Rect::new(rect.x, rect.y, t, rect.h), color);
    fill_rect(
        canvas,
        Rect::new(rect.x + rect.w - t, rect.y, t, rect.h),
        color,
    );
}

fn blend_pixel(canvas: &mut RgbImage, x: i32, y: i32, color: Color, alpha: u8) {
    let (w, h) = canvas.dimensions();
    if x < 0 || y < 0 || x >= w as i32 || y >= h as i32 || alpha == 0 {
        return;
    }
    let i = (y as usize * w as usize + x as usize) * 3;
    let buf: &mut [u8] = canvas.as_mut();
    let a = u32::from(alpha);
    for (dst, src) in buf[i..i + 3].iter_mut().zip(color) {
        *dst = ((u32::from(*dst) * (255 - a) + u32::from(src) * a + 127) / 255) as u8;
    }
}

/// Where the fixed parts of the picture go, from the canvas size alone.
struct Layout {
    width: i32,
    /// The short side: every size scales with it so wide and tall images look alike.
    unit: f32,
    margin: i32,
    banner: Rect,
    footer: Rect,
    middle: Rect,
}

impl Layout {
    fn new(width: u32, height: u32) -> Layout {
        let (w, h) = (width as i32, height as i32);
        let unit = w.min(h) as f32;
        let margin = (unit * 0.04).round() as i32;
        // Very tall or wide images get bars sized from the long side too, within reason.
        let banner_h = ((unit * 0.15).max(h as f32 * 0.06))
            .min(h as f32 * 0.3)
            .round() as i32;
        let footer_h = ((unit * 0.065).max(h as f32 * 0.03))
            .min(h as f32 * 0.15)
            .round() as i32;
        let banner = Rect::new(0, 0, w, banner_h);
        let footer = Rect::new(0, h - footer_h, w, footer_h);
        let middle = Rect::new(
            margin,
            banner_h + margin,
            w - 2 * margin,
            h - banner_h - footer_h - 2 * margin,
        );
        Layout {
            width: w,
            unit,
            margin,
            banner,
            footer,
            middle,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The parts of the picture

fn draw_banner(canvas: &mut RgbImage, fonts: &Fonts, layout: &Layout) {
    let bar = layout.banner;
    fill_rect(canvas, bar, BAR);
    // An amber rule under the bar, the colour of a "work in progress" sign.
    let rule = ((bar.h as f32) * 0.06).round().max(1.0) as i32;
    fill_rect(
        canvas,
        Rect::new(0, bar.y + bar.h - rule, bar.w, rule),
        AMBER,
    );

    let text_w = (layout.width - 2 * layout.margin.max(2)) as f32;
    let inner_h = (bar.h - rule) as f32;
    // Two lines so the message stays large on narrow images too.
    let title = TextStyle::fitted(&fonts.bold, "PLACEHOLDER", text_w, inner_h * 0.44);
    let note_text = "no upstream model was called";
    let note = TextStyle::fitted(&fonts.regular, note_text, text_w, inner_h * 0.23);
    let block = title.px * 1.05 + note.px;
    let top = (inner_h - block) / 2.0;
    let center = layout.width as f32 / 2.0;
    draw_centered(canvas, &title, "PLACEHOLDER", center, top, AMBER);
    draw_centered(
        canvas,
        &note,
        note_text,
        center,
        top + title.px * 1.05,
        TEXT,
    );
}

fn draw_footer(canvas: &mut RgbImage, fonts: &Fonts, layout: &Layout, text: &str) {
    let bar = layout.footer;
    fill_rect(canvas, bar, BAR);
    let max_w = (layout.width - 2 * layout.margin.max(2)) as f32;
    let style = TextStyle::fitted(&fonts.regular, text, max_w, bar.h as f32 * 0.5);
    let lines = wrap(&style, text, max_w, 1);
    if let Some(line) = lines.lines.first() {
        let top = bar.y as f32 + (bar.h as f32 - style.px) / 2.0;
        draw_centered(canvas, &style, line, layout.width as f32 / 2.0, top, MUTED);
    }
}

/// The prompt, as large as it fits, centred on a darkened panel.
fn draw_prompt(canvas: &mut RgbImage, fonts: &Fonts, prompt: &str, area: Rect, unit: f32) {
    let pad = (unit * 0.025).round() as i32;
    let inner = area.inset(pad);
    if inner.w < 4 || inner.h < 4 {
        return;
    }
    let text = if prompt.trim().is_empty() {
        "(empty prompt)"
    } else {
        prompt
    };
    let (max_w, max_h) = (inner.w as f32, inner.h as f32);
    // Narrow images (8:1, 1:8) have room for larger text than their short side suggests.
    let largest = (unit * 0.075).max((max_w * max_h).sqrt() * 0.06).min(max_h);
    let smallest = (unit * 0.024).max(9.0).min(largest);

    let mut px = largest;
    let (style, wrapped) = loop {
        let style = TextStyle::new(&fonts.regular, px);
        let max_lines = (max_h / style.line_height()).floor().max(1.0) as usize;
        let wrapped = wrap(&style, text, max_w, max_lines);
        if !wrapped.truncated || px <= smallest {
            break (style, wrapped);
        }
        px = (px * 0.87).max(smallest);
    };

    let line_h = style.line_height();
    let block_w = wrapped
        .lines
        .iter()
        .map(|l| style.width(l))
        .fold(0.0f32, f32::max);
    let block_h = line_h * wrapped.lines.len() as f32 - (line_h - style.px);
    let top = inner.y as f32 + ((max_h - block_h) / 2.0).max(0.0);
    let center = inner.x as f32 + max_w / 2.0;
    let panel = Rect::new(
        (center - block_w / 2.0).floor() as i32 - pad,
        top.floor() as i32 - pad,
        block_w.ceil() as i32 + 2 * pad,
        block_h.ceil() as i32 + 2 * pad,
    );
    darken_rect(canvas, panel, 110);
    for (i, line) in wrapped.lines.iter().enumerate() {
        draw_centered(canvas, &style, line, center, top + line_h * i as f32, TEXT);
    }
}

/// The edit's input images in a grid, each scaled to fit its cell, with a white border; an input
/// that cannot be decoded is a labelled box instead.
fn draw_inputs(canvas: &mut RgbImage, fonts: &Fonts, inputs: &[InputImage], area: Rect, unit: f32) {
    let n = inputs.len() as i32;
    let gap = (unit * 0.02).round().max(2.0) as i32;
    let border = (unit / 256.0).round().max(2.0) as i32;
    if n == 0 || area.w < 8 || area.h < 8 {
        return;
    }
    // The column count that gives the largest square cells.
    let (cols, cell_w, cell_h) = (1..=n)
        .map(|cols| {
            let rows = (n + cols - 1) / cols;
            let cw = (area.w - gap * (cols - 1)) / cols;
            let ch = (area.h - gap * (rows - 1)) / rows;
            (cols, cw, ch)
        })
        .max_by_key(|&(cols, cw, ch)| (cw.min(ch), -cols))
        .unwrap_or((1, area.w, area.h));
    let rows = (n + cols - 1) / cols;
    let grid_w = cols * cell_w + gap * (cols - 1);
    let grid_h = rows * cell_h + gap * (rows - 1);
    let (x0, y0) = (
        area.x + (area.w - grid_w) / 2,
        area.y + (area.h - grid_h) / 2,
    );

    for (i, input) in inputs.iter().enumerate() {
        let (col, row) = (i as i32 % cols, i as i32 / cols);
        let cell = Rect::new(
            x0 + col * (cell_w + gap),
            y0 + row * (cell_h + gap),
            cell_w,
            cell_h,
        );
        let room = cell.inset(border);
        if room.w < 1 || room.h < 1 {
            continue;
        }
        match decode_thumbnail(input, room.w as u32, room.h as u32) {
            Ok(thumb) => {
                let (tw, th) = (thumb.width() as i32, thumb.height() as i32);
                let at = Rect::new(
                    room.x + (room.w - tw) / 2,
                    room.y + (room.h - th) / 2,
                    tw,
                    th,
                );
                stroke_rect(canvas, at.inset(-border), border, TEXT);
                draw_rgba(canvas, &thumb, at.x, at.y);
            }
            Err(err) => {
                tracing::debug!(mime_type = input.mime_type, error = %err, "placeholder cannot preview an input image");
                draw_unreadable_input(canvas, fonts, input, room, border);
            }
        }
    }
}

fn decode_thumbnail(input: &InputImage, max_w: u32, max_h: u32) -> image::ImageResult<RgbaImage> {
    let mut reader = ImageReader::new(Cursor::new(&input.bytes[..])).with_guessed_format()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(INPUT_MAX_ALLOC);
    reader.limits(limits);
    // `thumbnail` fits the image inside the cell, up or down, with a cheap integer filter.
    Ok(reader.decode()?.thumbnail(max_w, max_h).to_rgba8())
}

fn draw_rgba(canvas: &mut RgbImage, image: &RgbaImage, x0: i32, y0: i32) {
    for (x, y, px) in image.enumerate_pixels() {
        let [r, g, b, a] = px.0;
        blend_pixel(canvas, x0 + x as i32, y0 + y as i32, [r, g, b], a);
    }
}

/// A box with the input's declared shape, type and size, for what `image` cannot decode (HEIC).
fn draw_unreadable_input(
    canvas: &mut RgbImage,
    fonts: &Fonts,
    input: &InputImage,
    room: Rect,
    border: i32,
) {
    let (iw, ih) = (input.width.max(1) as f32, input.height.max(1) as f32);
    let scale = (room.w as f32 / iw).min(room.h as f32 / ih);
    let (bw, bh) = (
        ((iw * scale) as i32).clamp(1, room.w),
        ((ih * scale) as i32).clamp(1, room.h),
    );
    let bx = Rect::new(
        room.x + (room.w - bw) / 2,
        room.y + (room.h - bh) / 2,
        bw,
        bh,
    );
    fill_rect(canvas, bx, [48, 48, 54]);
    stroke_rect(canvas, bx.inset(-border), border, TEXT);

    let size = if input.width > 0 && input.height > 0 {
        format!("{}×{}", input.width, input.height)
    } else {
        "size unknown".to_owned()
    };
    let lines = [input.mime_type, size.as_str(), "no preview"];
    let max_w = bx.w as f32 * 0.86;
    let px = lines
        .iter()
        .map(|l| TextStyle::fitted(&fonts.regular, l, max_w, bx.h as f32 * 0.16).px)
        .fold(f32::INFINITY, f32::min);
    let style = TextStyle::new(&fonts.regular, px);
    let line_h = style.line_height();
    let top = bx.y as f32 + (bx.h as f32 - line_h * 3.0) / 2.0;
    let center = bx.x as f32 + bx.w as f32 / 2.0;
    for (i, line) in lines.iter().enumerate() {
        let color = if i == 0 { AMBER } else { TEXT };
        draw_centered(canvas, &style, line, center, top + line_h * i as f32, color);
    }
}

// ---------------------------------------------------------------------------------------------
// Fonts

/// Fonts in the order a character is looked up; after the last comes `font8x8`, then a box.
#[derive(Clone, Default)]
struct FontStack {
    faces: Vec<Arc<FontVec>>,
}

struct Fonts {
    regular: FontStack,
    bold: FontStack,
}

impl Fonts {
    /// Only the bundled bitmap glyphs: what a machine without fonts gets.
    #[cfg(test)]
    fn bundled_only() -> Fonts {
        Fonts {
            regular: FontStack::default(),
            bold: FontStack::default(),
        }
    }
}

static SYSTEM_FONTS: OnceLock<Fonts> = OnceLock::new();

/// Where Linux distributions put fonts; Debian's Noto CJK, WenQuanYi and Droid packages included.
const FONT_ROOTS: &[&str] = &["/usr/share/fonts", "/usr/local/share/fonts"];

fn system_fonts() -> &'static Fonts {
    SYSTEM_FONTS.get_or_init(|| {
        let roots: Vec<&Path> = FONT_ROOTS.iter().map(Path::new).collect();
        discover_fonts(&roots)
    })
}

/// Picks a Latin regular and bold face and one CJK face from the font files under `roots`.
fn discover_fonts(roots: &[&Path]) -> Fonts {
    let files = font_files(roots);
    let pick = |names: &[&str]| {
        names.iter().find_map(|name| {
            let name = name.to_ascii_lowercase();
            files
                .iter()
                .filter(|p| file_name_lower(p) == name)
                .find_map(|p| load_font(p).map(|f| (p.clone(), f)))
        })
    };
    let regular = pick(&[
        "DejaVuSans.ttf",
        "LiberationSans-Regular.ttf",
        "NotoSans-Regular.ttf",
        "FreeSans.ttf",
    ]);
    let bold = pick(&[
        "DejaVuSans-Bold.ttf",
        "LiberationSans-Bold.ttf",
        "NotoSans-Bold.ttf",
        "FreeSansBold.ttf",
    ]);
    let cjk = pick(&[
        "NotoSansCJK-Regular.ttc",
        "NotoSansCJKsc-Regular.otf",
        "NotoSansSC-Regular.otf",
        "NotoSansSC-Regular.ttf",
        "wqy-zenhei.ttc",
        "wqy-microhei.ttc",
        "DroidSansFallbackFull.ttf",
        "DroidSansFallback.ttf",
    ])
    .or_else(|| {
        // Any other CJK face, e.g. a serif one or another distribution's file name.
        files
            .iter()
            .filter(|p| {
                let name = file_name_lower(p);
                name.contains("cjk") && name.contains("regular")
            })
            .find_map(|p| load_font(p).map(|f| (p.clone(), f)))
    })
    .filter(|(_, font)| font.glyph_id('中') != GlyphId(0));

    tracing::info!(
        regular = ?regular.as_ref().map(|(p, _)| p),
        bold = ?bold.as_ref().map(|(p, _)| p),
        cjk = ?cjk.as_ref().map(|(p, _)| p),
        "placeholder fonts chosen; characters no font has are drawn as boxes"
    );
    let cjk = cjk.map(|(_, f)| Arc::new(f));
    let regular = regular.map(|(_, f)| Arc::new(f));
    // Without a bold face, the regular one beats the blocky bitmap for the title.
    let bold = bold.map(|(_, f)| Arc::new(f)).or_else(|| regular.clone());
    let stack = |first: Option<Arc<FontVec>>| FontStack {
        faces: first.into_iter().chain(cjk.clone()).collect(),
    };
    Fonts {
        regular: stack(regular),
        bold: stack(bold),
    }
}

fn file_name_lower(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Font files under `roots`, sorted so the choice does not depend on directory order. Bounded in
/// depth and count, since symlinks may loop and a font folder can be huge.
fn font_files(roots: &[&Path]) -> Vec<PathBuf> {
    const MAX_DEPTH: usize = 6;
    const MAX_ENTRIES: usize = 20_000;
    let mut found = Vec::new();
    let mut seen = 0usize;
    let mut pending: Vec<(PathBuf, usize)> = roots.iter().map(|r| (r.to_path_buf(), 0)).collect();
    while let Some((dir, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_ENTRIES {
                break;
            }
            let path = entry.path();
            // `metadata` follows symlinks, which Debian uses for some font packages.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if depth < MAX_DEPTH {
                    pending.push((path, depth + 1));
                }
            } else if meta.is_file() && meta.len() <= FONT_MAX_BYTES {
                let name = file_name_lower(&path);
                if name.ends_with(".ttf") || name.ends_with(".otf") || name.ends_with(".ttc") {
                    found.push(path);
                }
            }
        }
    }
    found.sort();
    found
}

fn load_font(path: &Path) -> Option<FontVec> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot read font file");
            return None;
        }
    };
    // The first face of a collection; for Noto CJK that is the Japanese one, whose Han glyphs
    // differ from Chinese forms only in details.
    match FontVec::try_from_vec_and_index(bytes, 0) {
        Ok(font) => Some(font),
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot parse font file");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Text

enum Glyph<'a> {
    Outline(&'a FontVec, GlyphId),
    /// An 8x8 `font8x8` bitmap: one byte per row, bit 0 leftmost; rows 0..=6 sit above the
    /// baseline, row 7 holds descenders.
    Bitmap([u8; 8]),
    Missing,
}

/// How text of one size in one font stack is measured and drawn.
struct TextStyle<'a> {
    stack: &'a FontStack,
    /// Ascent plus descent, in pixels (what `ab_glyph`'s `PxScale` means).
    px: f32,
}

impl<'a> TextStyle<'a> {
    fn new(stack: &'a FontStack, px: f32) -> TextStyle<'a> {
        TextStyle {
            stack,
            px: px.max(1.0),
        }
    }

    /// The largest size up to `max_px` at which `text` fits in `max_w` on one line, but not below
    /// a size that is still legible; text that is still too long gets truncated by `wrap`.
    fn fitted(stack: &'a FontStack, text: &str, max_w: f32, max_px: f32) -> TextStyle<'a> {
        let min_px = 8.0f32.min(max_px);
        let mut style = TextStyle::new(stack, max_px);
        for _ in 0..4 {
            let width = style.width(text);
            if width <= max_w || style.px <= min_px {
                break;
            }
            // Width is nearly proportional to size; the bitmap's whole-pixel cells are not quite.
            style.px = (style.px * max_w / width * 0.98).max(min_px);
        }
        style
    }

    fn line_height(&self) -> f32 {
        self.px * 1.25
    }

    fn baseline(&self) -> f32 {
        // DejaVu's and Noto's ascent is about 0.8 of ascent + descent; the bitmap is placed to match.
        self.px * 0.8
    }

    fn glyph(&self, c: char) -> Glyph<'a> {
        let stack: &'a FontStack = self.stack;
        for face in &stack.faces {
            let id = face.glyph_id(c);
            if id != GlyphId(0) {
                return Glyph::Outline(face, id);
            }
        }
        if !c.is_control() {
            let bitmap = font8x8::BASIC_FONTS
                .get(c)
                .or_else(|| font8x8::LATIN_FONTS.get(c))
                .or_else(|| font8x8::GREEK_FONTS.get(c));
            if let Some(bitmap) = bitmap {
                return Glyph::Bitmap(bitmap);
            }
        }
        Glyph::Missing
    }

    /// The size of one bitmap cell, so that a capital is about as tall as the outline fonts' ones.
    fn bitmap_cell(&self) -> i32 {
        ((self.px * 0.72 / 7.0).round() as i32).max(1)
    }

    fn advance(&self, c: char) -> f32 {
        match self.glyph(c) {
            Glyph::Outline(font, id) => font.as_scaled(PxScale::from(self.px)).h_advance(id),
            Glyph::Bitmap(_) => (self.bitmap_cell() * 8) as f32,
            Glyph::Missing => (self.px * 0.7).round(),
        }
    }

    fn width(&self, text: &str) -> f32 {
        text.chars().map(|c| self.advance(c)).sum()
    }

    fn ellipsis(&self) -> &'static str {
        if matches!(self.glyph('…'), Glyph::Missing) {
            "..."
        } else {
            "…"
        }
    }
}

struct Wrapped {
    lines: Vec<String>,
    /// Whether text was left out (and the last line ends with an ellipsis).
    truncated: bool,
}

/// Breaks `text` into at most `max_lines` lines of at most `max_w` pixels: at spaces, between
/// CJK characters (never before closing punctuation such as `，` or `。`), and, for a word longer
/// than a line, anywhere. A single glyph wider than the line still gets a line of its own.
fn wrap(style: &TextStyle, text: &str, max_w: f32, max_lines: usize) -> Wrapped {
    let mut lines: Vec<String> = Vec::new();
    let mut truncated = false;
    'paragraphs: for paragraph in text.split('\n') {
        let mut line = String::new();
        let mut line_w = 0.0f32;
        // Byte offsets in `line` where it may be broken, in increasing order.
        let mut breaks: Vec<usize> = Vec::new();
        for c in paragraph.chars() {
            let c = if c.is_whitespace() { ' ' } else { c };
            if c.is_control() {
                continue;
            }
            if c == ' ' && line.is_empty() && !lines.is_empty() {
                continue;
            }
            let w = style.advance(c);
            if line_w + w > max_w && !line.is_empty() {
                if c == ' ' {
                    lines.push(line.trim_end().to_owned());
                    line.clear();
                    line_w = 0.0;
                    breaks.clear();
                    if lines.len() > max_lines {
                        truncated = true;
                        break 'paragraphs;
                    }
                    continue;
                }
                // The last break that leaves neither line empty nor closing punctuation first.
                let at = breaks.iter().rev().copied().find(|&at| {
                    let next = line[at..].chars().next().unwrap_or(c);
                    at > 0 && !closes(next)
                });
                let carry = at.map(|at| line.split_off(at)).unwrap_or_default();
                lines.push(line.trim_end().to_owned());
                let trimmed = carry.trim_start();
                let shift = at.unwrap_or(0) + (carry.len() - trimmed.len());
                breaks = breaks
                    .iter()
                    .filter(|&&b| b > shift)
                    .map(|&b| b - shift)
                    .collect();
                line = trimmed.to_owned();
                line_w = style.width(&line);
                if lines.len() > max_lines {
                    truncated = true;
                    break 'paragraphs;
                }
            }
            if is_wide(c) && breaks.last() != Some(&line.len()) {
                breaks.push(line.len());
            }
            line.push(c);
            line_w += w;
            if c == ' ' || is_wide(c) {
                breaks.push(line.len());
            }
        }
        lines.push(line.trim_end().to_owned());
        if lines.len() > max_lines {
            truncated = true;
            break;
        }
    }

    if truncated {
        lines.truncate(max_lines.max(1));
        let ellipsis = style.ellipsis();
        let room = max_w - style.width(ellipsis);
        if let Some(last) = lines.last_mut() {
            let mut kept = last.trim_end().to_owned();
            while !kept.is_empty() && style.width(&kept) > room {
                kept.pop();
            }
            *last = format!("{}{ellipsis}", kept.trim_end());
        }
    }
    Wrapped { lines, truncated }
}

/// Punctuation that must not start a line.
fn closes(c: char) -> bool {
    matches!(
        c,
        ',' | '.'
            | '!'
            | '?'
            | ';'
            | ':'
            | ')'
            | ']'
            | '}'
            | '，'
            | '。'
            | '、'
            | '！'
            | '？'
            | '；'
            | '：'
            | '）'
            | '」'
            | '』'
            | '】'
            | '》'
            | '〉'
            | '…'
            | '・'
            | 'ー'
    )
}

/// Characters between which a line may break even without a space (CJK scripts).
fn is_wide(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF | 0x2E80..=0xA4CF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F | 0xFF00..=0xFFEF | 0x20000..=0x3FFFF)
}

/// Draws one line centred on `center_x`, its line box starting at `top`.
fn draw_centered(
    canvas: &mut RgbImage,
    style: &TextStyle,
    text: &str,
    center_x: f32,
    top: f32,
    color: Color,
) {
    let x = center_x - style.width(text) / 2.0;
    draw_line(canvas, style, text, x, top + style.baseline(), color);
}

fn draw_line(
    canvas: &mut RgbImage,
    style: &TextStyle,
    text: &str,
    x: f32,
    baseline: f32,
    color: Color,
) {
    let scale = PxScale::from(style.px);
    let mut pen = x;
    for c in text.chars() {
        let glyph = style.glyph(c);
        match glyph {
            Glyph::Outline(font, id) => {
                let positioned = id.with_scale_and_position(scale, point(pen, baseline));
                if let Some(outline) = font.outline_glyph(positioned) {
                    let bounds = outline.px_bounds();
                    let (ox, oy) = (bounds.min.x as i32, bounds.min.y as i32);
                    outline.draw(|gx, gy, coverage| {
                        let alpha = (coverage.clamp(0.0, 1.0) * 255.0).round() as u8;
                        blend_pixel(canvas, ox + gx as i32, oy + gy as i32, color, alpha);
                    });
                }
            }
            Glyph::Bitmap(rows) => {
                let k = style.bitmap_cell();
                let left = pen.round() as i32;
                let top = baseline.round() as i32 - 7 * k;
                for (row, bits) in rows.iter().enumerate() {
                    for col in 0..8 {
                        if bits & (1 << col) != 0 {
                            let cell = Rect::new(left + col * k, top + row as i32 * k, k, k);
                            fill_rect(canvas, cell, color);
                        }
                    }
                }
            }
            Glyph::Missing => {
                // A visible "tofu" box, so missing text is obvious rather than silently dropped.
                let w = (style.px * 0.55).round() as i32;
                let h = (style.px * 0.7).round() as i32;
                let left = (pen + style.px * 0.075).round() as i32;
                let top = baseline.round() as i32 - h;
                let t = (style.px / 16.0).round().max(1.0) as i32;
                stroke_rect(canvas, Rect::new(left, top, w, h), t, color);
            }
        }
        pen += style.advance(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AspectRatio, Resolution};

    fn job(prompt: &str, width: u32, height: u32) -> ImageJob {
        ImageJob {
            prompt: prompt.to_owned(),
            model: "nano-banana".to_owned(),
            upstream_model: "gemini-2.5-flash-image".to_owned(),
            inputs: Vec::new(),
            aspect_ratio: Some(AspectRatio::R1x1),
            image_size: Some(Resolution::R1K),
            width,
            height,
        }
    }

    fn decode(png: &[u8]) -> image::RgbImage {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        image::load_from_memory_with_format(png, image::ImageFormat::Png)
            .unwrap()
            .to_rgb8()
    }

    fn solid_png(w: u32, h: u32, rgba: [u8; 4]) -> Bytes {
        let img = RgbaImage::from_pixel(w, h, image::Rgba(rgba));
        let mut out = Vec::new();
        PngEncoder::new(&mut out)
            .write_image(img.as_raw(), w, h, ExtendedColorType::Rgba8)
            .unwrap();
        Bytes::from(out)
    }

    fn input(bytes: Bytes, mime_type: &'static str, width: u32, height: u32) -> InputImage {
        InputImage {
            bytes,
            mime_type,
            width,
            height,
        }
    }

    const CJK_PROMPT: &str = "一只戴着宇航员头盔的橘猫，漂浮在星云之间，电影感光影，超高清细节";

    #[test]
    fn renders_exactly_the_requested_size() {
        for (w, h) in [
            (1024, 1024),
            (848, 1264),
            (1376, 768),
            (1536, 192),
            (192, 1536),
        ] {
            let png = render_png(&job("a banana wearing sunglasses", w, h)).unwrap();
            assert_eq!(decode(&png).dimensions(), (w, h), "for {w}x{h}");
        }
    }

    #[test]
    fn tiny_images_render_without_panicking() {
        for (w, h) in [(1, 1), (2, 300), (300, 2), (17, 9)] {
            let png = render_png(&job("tiny", w, h)).unwrap();
            assert_eq!(decode(&png).dimensions(), (w, h));
        }
    }

    #[test]
    fn same_job_gives_identical_bytes() {
        let j = job("a lighthouse at dusk, oil painting", 640, 480);
        assert_eq!(render_png(&j).unwrap(), render_png(&j).unwrap());
    }

    #[test]
    fn different_prompts_give_different_images() {
        let a = render_png(&job("a red fox in snow", 512, 512)).unwrap();
        let b = render_png(&job("a blue whale in the deep", 512, 512)).unwrap();
        assert_ne!(a, b);
        // The background differs too, not only the text: compare a corner under no text.
        let (a, b) = (decode(&a), decode(&b));
        let corner = |img: &RgbImage| *img.get_pixel(2, 511 - 60);
        assert_ne!(corner(&a), corner(&b));
    }

    #[test]
    fn colours_come_from_a_stable_hash() {
        // FNV-1a's published test vectors: the colours of a prompt must not change between builds.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn cjk_prompt_renders_with_the_system_fonts() {
        let png = render_png(&job(CJK_PROMPT, 848, 1264)).unwrap();
        assert_eq!(decode(&png).dimensions(), (848, 1264));
    }

    #[test]
    fn cjk_prompt_renders_with_no_fonts_at_all() {
        // What a machine with no CJK (or any) system font gets: bitmap Latin, boxes for the rest.
        let fonts = Fonts::bundled_only();
        let png = render_with(&job(CJK_PROMPT, 1024, 1024), &fonts).unwrap();
        assert_eq!(decode(&png).dimensions(), (1024, 1024));
        let style = TextStyle::new(&fonts.regular, 20.0);
        assert!(matches!(style.glyph('中'), Glyph::Missing));
        assert!(matches!(style.glyph('A'), Glyph::Bitmap(_)));
        assert!(matches!(style.glyph('é'), Glyph::Bitmap(_)));
    }

    #[test]
    fn bundled_bitmap_font_draws_latin_text() {
        let fonts = Fonts::bundled_only();
        let a = render_with(&job("hello", 400, 400), &fonts).unwrap();
        let b = render_with(&job("world", 400, 400), &fonts).unwrap();
        let blank = render_with(&job(" ", 400, 400), &fonts).unwrap();
        assert_ne!(a, b);
        // Some pixel of the prompt area is (nearly) the text colour.
        let img = decode(&a);
        let lit = (60..340)
            .flat_map(|y| (0..400).map(move |x| (x, y)))
            .any(|(x, y)| img.get_pixel(x, y).0 == TEXT);
        assert!(lit);
        assert_ne!(a, blank);
    }

    #[test]
    fn falls_back_per_glyph_and_never_panics_on_odd_text() {
        let odd = "tab\there\r\nzero\u{200b}width \u{0}nul 🍌🍌 עברית مرحبا e\u{301} \u{10ffff}";
        let png = render_png(&job(odd, 300, 300)).unwrap();
        assert_eq!(decode(&png).dimensions(), (300, 300));
        let png = render_with(&job(odd, 300, 300), &Fonts::bundled_only()).unwrap();
        assert_eq!(decode(&png).dimensions(), (300, 300));
    }

    #[test]
    fn long_prompt_is_wrapped_and_truncated_with_an_ellipsis() {
        let fonts = system_fonts();
        let style = TextStyle::new(&fonts.regular, 24.0);
        let text = "word ".repeat(400);
        let wrapped = wrap(&style, &text, 300.0, 3);
        assert!(wrapped.truncated);
        assert_eq!(wrapped.lines.len(), 3);
        assert!(wrapped.lines[2].ends_with(style.ellipsis()));
        for line in &wrapped.lines {
            assert!(style.width(line) <= 300.0, "{line:?} is too wide");
            assert!(!line.starts_with(' '));
        }
        // Whole words only, except the ellipsis.
        assert!(wrapped.lines[0].split(' ').all(|w| w == "word"));

        let short = wrap(&style, "a short prompt", 300.0, 3);
        assert!(!short.truncated);
        assert_eq!(short.lines, vec!["a short prompt"]);
    }

    #[test]
    fn cjk_text_wraps_between_characters() {
        for fonts in [system_fonts(), &Fonts::bundled_only()] {
            let style = TextStyle::new(&fonts.regular, 20.0);
            let wrapped = wrap(&style, CJK_PROMPT, 150.0, 100);
            assert!(!wrapped.truncated);
            assert!(wrapped.lines.len() > 1);
            for line in &wrapped.lines {
                assert!(style.width(line) <= 150.0);
            }
            assert_eq!(wrapped.lines.concat(), CJK_PROMPT);
        }
    }

    #[test]
    fn no_line_starts_with_closing_punctuation() {
        for fonts in [system_fonts(), &Fonts::bundled_only()] {
            let style = TextStyle::new(&fonts.regular, 20.0);
            let one = style.advance('猫');
            // Widths where the comma would fall first on a line if breaks ignored punctuation.
            for chars in 2..12 {
                let wrapped = wrap(&style, CJK_PROMPT, one * chars as f32 + 0.5, 100);
                assert_eq!(wrapped.lines.concat(), CJK_PROMPT);
                for line in &wrapped.lines {
                    let first = line.chars().next().unwrap();
                    assert!(!closes(first), "{line:?} at {chars} chars a line");
                }
            }
        }
    }

    #[test]
    fn overlong_word_is_broken_anywhere() {
        let fonts = Fonts::bundled_only();
        let style = TextStyle::new(&fonts.regular, 20.0);
        let word = "x".repeat(50);
        let wrapped = wrap(&style, &word, 100.0, 100);
        assert_eq!(wrapped.lines.concat(), word);
        assert!(wrapped.lines.iter().all(|l| style.width(l) <= 100.0));
    }

    #[test]
    fn edit_shows_the_input_images() {
        let mut j = job("make the sky purple", 1024, 1024);
        j.aspect_ratio = None;
        j.inputs = vec![
            input(solid_png(64, 48, [255, 0, 0, 255]), "image/png", 64, 48),
            input(solid_png(30, 90, [0, 0, 255, 255]), "image/png", 30, 90),
        ];
        let img = decode(&render_png(&j).unwrap());
        assert_eq!(img.dimensions(), (1024, 1024));
        let has = |rgb: [u8; 3]| img.pixels().any(|p| p.0 == rgb);
        assert!(has([255, 0, 0]), "the first input is drawn");
        assert!(has([0, 0, 255]), "the second input is drawn");
    }

    #[test]
    fn edit_with_an_undecodable_input_draws_a_labelled_box() {
        let mut heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic".to_vec();
        heic.extend_from_slice(&[0u8; 64]);
        let mut j = job("remove the background", 848, 1264);
        j.inputs = vec![
            input(Bytes::from(heic), "image/heic", 4032, 3024),
            input(
                Bytes::from_static(b"\x89PNG\r\n\x1a\ntruncated"),
                "image/png",
                0,
                0,
            ),
            input(solid_png(8, 8, [0, 255, 0, 128]), "image/png", 8, 8),
        ];
        let png = render_png(&j).unwrap();
        assert_eq!(decode(&png).dimensions(), (848, 1264));
        assert_eq!(png, render_png(&j).unwrap());
    }

    #[test]
    fn empty_or_huge_sizes_are_errors_not_panics() {
        for (w, h) in [(0, 1024), (1024, 0), (0, 0)] {
            assert!(matches!(
                render_png(&job("x", w, h)),
                Err(PlaceholderError::EmptySize { .. })
            ));
        }
        for (w, h) in [(MAX_IMAGE_SIDE + 1, 1), (8192, 8192)] {
            assert!(matches!(
                render_png(&job("x", w, h)),
                Err(PlaceholderError::TooLarge { .. })
            ));
        }
    }

    #[test]
    fn a_machine_without_fonts_still_renders() {
        let empty = tempfile::tempdir().unwrap();
        let fonts = discover_fonts(&[empty.path(), Path::new("/nonexistent/fonts")]);
        assert!(fonts.regular.faces.is_empty() && fonts.bold.faces.is_empty());
        let png = render_with(&job("still readable", 320, 200), &fonts).unwrap();
        assert_eq!(decode(&png).dimensions(), (320, 200));
    }

    #[tokio::test]
    async fn provider_returns_a_png() {
        let provider = PlaceholderProvider::new();
        assert_eq!(provider.name(), "placeholder");
        let image = provider
            .generate(&job("a banana on the moon", 848, 1264))
            .await
            .unwrap();
        assert_eq!(image.mime_type, "image/png");
        assert_eq!(decode(&image.bytes).dimensions(), (848, 1264));

        let err = provider.generate(&job("x", 0, 10)).await.unwrap_err();
        assert!(!err.is_retryable());
    }
}
