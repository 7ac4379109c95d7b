//! The placeholder's text: fonts (system ones found once, DejaVu for Latin and a CJK face when one
//! is installed, then `font8x8`'s bitmaps, then a visible box), measuring, wrapping and drawing a
//! line. No layout engine: no shaping, no right-to-left, no kerning; this is a label, not
//! typography. Where text goes on the picture, and how large, is `mod.rs`'s business.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ab_glyph::{Font, FontVec, GlyphId, PxScale, ScaleFont, point};
use font8x8::UnicodeFonts;
use image::RgbImage;

use super::{Color, Rect, blend_pixel, fill_rect, stroke_rect};

/// A font file larger than this is not a font we want in memory for a label.
const FONT_MAX_BYTES: u64 = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Fonts

/// Fonts in the order a character is looked up; after the last comes `font8x8`, then a box.
#[derive(Clone, Default)]
pub(super) struct FontStack {
    pub(super) faces: Vec<Arc<FontVec>>,
}

pub(super) struct Fonts {
    pub(super) regular: FontStack,
    pub(super) bold: FontStack,
}

impl Fonts {
    /// Only the bundled bitmap glyphs: what a machine without fonts gets.
    #[cfg(test)]
    pub(super) fn bundled_only() -> Fonts {
        Fonts {
            regular: FontStack::default(),
            bold: FontStack::default(),
        }
    }
}

static SYSTEM_FONTS: OnceLock<Fonts> = OnceLock::new();

/// Where Linux distributions put fonts; Debian's Noto CJK, WenQuanYi and Droid packages included.
const FONT_ROOTS: &[&str] = &["/usr/share/fonts", "/usr/local/share/fonts"];

pub(super) fn system_fonts() -> &'static Fonts {
    SYSTEM_FONTS.get_or_init(|| {
        let roots: Vec<&Path> = FONT_ROOTS.iter().map(Path::new).collect();
        discover_fonts(&roots)
    })
}

/// Picks a Latin regular and bold face and one CJK face from the font files under `roots`.
pub(super) fn discover_fonts(roots: &[&Path]) -> Fonts {
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

pub(super) enum Glyph<'a> {
    Outline(&'a FontVec, GlyphId),
    /// An 8x8 `font8x8` bitmap: one byte per row, bit 0 leftmost; rows 0..=6 sit above the
    /// baseline, row 7 holds descenders.
    Bitmap([u8; 8]),
    Missing,
}

/// How text of one size in one font stack is measured and drawn.
pub(super) struct TextStyle<'a> {
    stack: &'a FontStack,
    /// Ascent plus descent, in pixels (what `ab_glyph`'s `PxScale` means).
    pub(super) px: f32,
}

impl<'a> TextStyle<'a> {
    pub(super) fn new(stack: &'a FontStack, px: f32) -> TextStyle<'a> {
        TextStyle {
            stack,
            px: px.max(1.0),
        }
    }

    /// The largest size up to `max_px` at which `text` fits in `max_w` on one line, but not below
    /// a size that is still legible; text that is still too long gets truncated by `wrap`.
    pub(super) fn fitted(
        stack: &'a FontStack,
        text: &str,
        max_w: f32,
        max_px: f32,
    ) -> TextStyle<'a> {
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

    pub(super) fn line_height(&self) -> f32 {
        self.px * 1.25
    }

    fn baseline(&self) -> f32 {
        // DejaVu's and Noto's ascent is about 0.8 of ascent + descent; the bitmap is placed to match.
        self.px * 0.8
    }

    pub(super) fn glyph(&self, c: char) -> Glyph<'a> {
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

    pub(super) fn advance(&self, c: char) -> f32 {
        match self.glyph(c) {
            Glyph::Outline(font, id) => font.as_scaled(PxScale::from(self.px)).h_advance(id),
            Glyph::Bitmap(_) => (self.bitmap_cell() * 8) as f32,
            Glyph::Missing => (self.px * 0.7).round(),
        }
    }

    pub(super) fn width(&self, text: &str) -> f32 {
        text.chars().map(|c| self.advance(c)).sum()
    }

    pub(super) fn ellipsis(&self) -> &'static str {
        if matches!(self.glyph('…'), Glyph::Missing) {
            "..."
        } else {
            "…"
        }
    }
}

pub(super) struct Wrapped {
    pub(super) lines: Vec<String>,
    /// Whether text was left out (and the last line ends with an ellipsis).
    pub(super) truncated: bool,
}

/// Breaks `text` into at most `max_lines` lines of at most `max_w` pixels: at spaces, between
/// CJK characters (never before closing punctuation such as `，` or `。`), and, for a word longer
/// than a line, anywhere. A single glyph wider than the line still gets a line of its own.
pub(super) fn wrap(style: &TextStyle, text: &str, max_w: f32, max_lines: usize) -> Wrapped {
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
pub(super) fn closes(c: char) -> bool {
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
pub(super) fn draw_centered(
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
