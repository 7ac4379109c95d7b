//! The placeholder's tests: exact sizes, determinism, text in any script with or without fonts,
//! wrapping, edits with readable and unreadable inputs, and the size limits.

use std::path::Path;

use super::text::{Glyph, closes, discover_fonts};
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
