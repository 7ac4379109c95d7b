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
//! in any script renders without error on any machine; `text` does the fonts and the lines, this
//! file where they go.
//!
//! Not here: choosing when to use the placeholder (configuration) and sizes (the caller computes
//! `width`/`height`).

use std::io::Cursor;

use bytes::Bytes;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder, ImageReader, Limits, RgbImage, RgbaImage};

use super::{GeneratedImage, ImageJob, ImageProvider, InputImage, ProviderError};
use crate::domain::MAX_IMAGE_SIDE;

mod text;

use text::{Fonts, TextStyle, draw_centered, system_fonts, wrap};

/// The most pixels we draw: a bit over 4K's 5504x3072 and 12288x1536, about 72 MiB as RGB.
pub const MAX_PIXELS: u64 = 24 * 1024 * 1024;

/// Caps what decoding one input image may allocate; larger inputs become a labelled box.
const INPUT_MAX_ALLOC: u64 = 256 * 1024 * 1024;

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

#[cfg(test)]
mod tests;
