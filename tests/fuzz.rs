//! Property-based fuzzing of everything that reads bytes a stranger chose, without a server:
//! request parsing and validation (`ImagesRequest::parse`, through `serde_json` from raw bytes
//! too), URL vetting (`Fetcher::check_url`), `data:` URIs and image headers (`parse_data_uri`,
//! `sniff_image`). Each property says "never panics" and, where something is accepted, that it
//! obeys the limits.
//!
//! The number of cases per property is proptest's default (256) unless `PROPTEST_CASES` says
//! otherwise; CI runs a longer bounded pass (see SECURITY.md):
//! `PROPTEST_CASES=20000 cargo test --locked --test fuzz`.
//! End-to-end hostile inputs through the real server live in `tests/api/hostile.rs`.

use std::io::Cursor;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use nano_banana::domain::{
    Action, ImagesRequest, MAX_IMAGE_SIDE as MAX_SIDE, MAX_IMAGE_URLS, RequestLimits,
};
use nano_banana::fetch::{
    FetchError, FetchPolicy, Fetcher, is_global, parse_data_uri, sniff_image,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

// ---- request parsing ------------------------------------------------------------------------

const FIELDS: &[&str] = &[
    "action",
    "prompt",
    "model",
    "image_urls",
    "count",
    "aspect_ratio",
    "resolution",
    "callback_url",
    "async",
];

const MODELS: &[&str] = &[
    "nano-banana",
    "nano-banana-2-lite",
    "nano-banana-2",
    "nano-banana-2.1",
    "nano-banana-pro",
    "nano-banana:official",
    "nano-banana-2-lite:official",
    "nano-banana-2:official",
    "nano-banana-pro:official",
];

const RATIOS: &[&str] = &["1:1", "3:2", "2:3", "16:9", "9:16", "4:3", "3:4"];

/// Strings that mean something to the parser, so that random objects often get past the first
/// field and reach the later checks.
fn meaningful_string() -> impl Strategy<Value = String> {
    let words: Vec<&'static str> = [
        "generate",
        "edit",
        "",
        " ",
        "1K",
        "2K",
        "4K",
        "data:image/png;base64,AAAA",
        "https://example.com/a.png",
        "http://127.0.0.1/",
        "\u{0}",
        "長",
    ]
    .into_iter()
    .chain(MODELS.iter().copied())
    .chain(RATIOS.iter().copied())
    .collect();
    prop_oneof![
        3 => proptest::sample::select(words).prop_map(str::to_owned),
        2 => any::<String>(),
        1 => ".{0,64}",
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-10i64..10).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        meaningful_string().prop_map(Value::String),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(FIELDS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Arbitrary JSON, up to a few levels deep, with keys that are mostly the contract's fields.
fn arb_json() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 64, 20, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..20).prop_map(Value::Array),
            proptest::collection::btree_map(json_key(), inner, 0..12)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects whose every field is one of the contract's, with any JSON value in it.
fn arb_request_like() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(proptest::sample::select(FIELDS), arb_json(), 0..10).prop_map(
        |m| {
            let mut object: Map<String, Value> =
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            // Give most of them a valid prompt so the later fields get looked at.
            object
                .entry("prompt")
                .or_insert_with(|| Value::String("a cat".into()));
            Value::Object(object)
        },
    )
}

fn arb_limits() -> impl Strategy<Value = RequestLimits> {
    prop_oneof![
        Just(RequestLimits::default()),
        (0usize..50, 0usize..80).prop_map(|(p, u)| RequestLimits {
            max_prompt_chars: p,
            max_url_chars: u,
        }),
    ]
}

/// What must hold for every accepted request, whatever the input.
fn check_outcome(body: &Value, limits: &RequestLimits) -> Result<(), TestCaseError> {
    match ImagesRequest::parse(body, limits) {
        Err(e) => {
            prop_assert!(!e.0.trim().is_empty(), "an empty error message");
            // Messages name a field or the body; they never echo a long input back.
            prop_assert!(e.0.len() < 200, "a long message: {}", e.0);
        }
        Ok(r) => {
            prop_assert!(body.is_object());
            prop_assert!((1..=4).contains(&r.count));
            prop_assert!(!r.prompt.trim().is_empty());
            prop_assert!(r.prompt.chars().count() <= limits.max_prompt_chars);
            prop_assert!(r.image_urls.len() <= MAX_IMAGE_URLS);
            prop_assert_eq!(r.image_urls.is_empty(), r.action == Action::Generate);
            for url in &r.image_urls {
                prop_assert!(!url.is_empty());
                let data = url
                    .get(..5)
                    .is_some_and(|p| p.eq_ignore_ascii_case("data:"));
                prop_assert!(data || url.len() <= limits.max_url_chars);
            }
            if let Some(cb) = &r.callback_url {
                prop_assert!(cb.len() <= limits.max_url_chars && !cb.trim().is_empty());
            }
            if r.action == Action::Generate {
                prop_assert!(r.aspect_ratio.is_some());
            }
            // Parsing is a function of the value: the stored request re-parses the same way
            // (the worker relies on this with the loosest limits).
            let loose = RequestLimits {
                max_prompt_chars: usize::MAX,
                max_url_chars: usize::MAX,
            };
            let again = ImagesRequest::parse(body, &loose);
            prop_assert!(again.is_ok(), "accepted, then refused with loose limits");
            let again = again.unwrap_or_else(|_| unreachable!());
            prop_assert_eq!(again.prompt, r.prompt);
            prop_assert_eq!(again.image_urls, r.image_urls);
            prop_assert_eq!(again.count, r.count);
            prop_assert_eq!(again.model, r.model);
        }
    }
    Ok(())
}

/// A request the contract says is valid, and the values it must parse to.
#[derive(Debug, Clone)]
struct ValidRequest {
    body: Value,
    action: Action,
    prompt: String,
    model: &'static str,
    image_urls: Vec<String>,
    count: u8,
    ratio: Option<&'static str>,
    resolution: &'static str,
}

fn valid_request() -> impl Strategy<Value = ValidRequest> {
    let action = prop_oneof![Just(None), Just(Some("generate")), Just(Some("edit"))];
    // A letter first, so that trimming never leaves it empty; anything after it.
    let prompt = ("[a-z長]", proptest::collection::vec(any::<char>(), 0..200))
        .prop_map(|(first, rest)| first + &rest.into_iter().collect::<String>());
    let model = proptest::option::of(proptest::sample::select(MODELS));
    let urls = proptest::collection::vec(
        prop_oneof![
            "https://[a-z]{1,20}\\.example/[a-z0-9]{0,20}\\.png",
            Just("data:image/png;base64,iVBORw0KGgo=".to_owned()),
        ],
        1..=MAX_IMAGE_URLS,
    );
    let count = proptest::option::of(1u8..=4);
    let ratio = proptest::option::of(proptest::sample::select(RATIOS));
    let resolution = proptest::option::of(proptest::sample::select(&["1K", "2K", "4K"][..]));
    let callback = proptest::option::of("https://[a-z]{1,20}\\.example/cb");
    let asynchronous = proptest::option::of(any::<bool>());
    let noise = proptest::collection::btree_map("[a-z_]{1,12}", json_leaf(), 0..4);
    (
        action,
        prompt,
        model,
        urls,
        count,
        ratio,
        (resolution, callback, asynchronous, noise),
    )
        .prop_map(
            |(
                action,
                prompt,
                model,
                urls,
                count,
                ratio,
                (resolution, callback, asynchronous, noise),
            )| {
                let mut body = Map::new();
                // Unknown fields are ignored; the contract's own are set below and win.
                for (k, v) in noise {
                    body.insert(k, v);
                }
                let parsed_action = match action {
                    Some("edit") => Action::Edit,
                    _ => Action::Generate,
                };
                if let Some(a) = action {
                    body.insert("action".into(), json!(a));
                }
                body.insert("prompt".into(), json!(prompt));
                if let Some(m) = model {
                    body.insert("model".into(), json!(m));
                }
                body.insert("image_urls".into(), json!(urls));
                if let Some(c) = count {
                    body.insert("count".into(), json!(c));
                }
                if let Some(r) = ratio {
                    body.insert("aspect_ratio".into(), json!(r));
                }
                let model_name = model.unwrap_or("nano-banana");
                let one_k_only = matches!(
                    model_name.split(':').next(),
                    Some("nano-banana" | "nano-banana-2-lite")
                );
                // Only models with a resolution choice may ask for more than 1K.
                let resolution = resolution.filter(|r| *r == "1K" || !one_k_only);
                if let Some(r) = resolution {
                    body.insert("resolution".into(), json!(r));
                }
                if let Some(cb) = callback {
                    body.insert("callback_url".into(), json!(cb));
                }
                if let Some(b) = asynchronous {
                    body.insert("async".into(), json!(b));
                }
                ValidRequest {
                    body: Value::Object(body),
                    action: parsed_action,
                    prompt,
                    model: model_name,
                    image_urls: if parsed_action == Action::Edit {
                        urls
                    } else {
                        Vec::new()
                    },
                    count: count.unwrap_or(1),
                    ratio: ratio.or((parsed_action == Action::Generate).then_some("1:1")),
                    resolution: resolution.unwrap_or("1K"),
                }
            },
        )
}

/// Byte-level mutations: (position as a fraction of the length, operation, byte).
fn mutations() -> impl Strategy<Value = Vec<(f64, u8, u8)>> {
    proptest::collection::vec((0.0f64..1.0, 0u8..4, any::<u8>()), 1..8)
}

fn mutate(mut bytes: Vec<u8>, ops: &[(f64, u8, u8)]) -> Vec<u8> {
    for &(at, op, byte) in ops {
        let i = ((bytes.len() as f64) * at) as usize;
        match op {
            0 if i < bytes.len() => bytes[i] = byte,
            1 => bytes.insert(i.min(bytes.len()), byte),
            2 if i < bytes.len() => {
                bytes.remove(i);
            }
            3 => bytes.truncate(i),
            _ => {}
        }
    }
    bytes
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_json(body in arb_json(), limits in arb_limits()) {
        check_outcome(&body, &limits)?;
    }

    #[test]
    fn parse_never_panics_on_request_like_objects(body in arb_request_like(), limits in arb_limits()) {
        check_outcome(&body, &limits)?;
    }

    #[test]
    fn arbitrary_bytes_through_serde_json_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(body) = serde_json::from_slice::<Value>(&bytes) {
            check_outcome(&body, &RequestLimits::default())?;
        }
    }

    #[test]
    fn mutated_valid_bodies_never_panic(req in valid_request(), ops in mutations()) {
        let bytes = mutate(req.body.to_string().into_bytes(), &ops);
        if let Ok(body) = serde_json::from_slice::<Value>(&bytes) {
            check_outcome(&body, &RequestLimits::default())?;
        }
    }

    #[test]
    fn valid_requests_always_parse(req in valid_request()) {
        let parsed = ImagesRequest::parse(&req.body, &RequestLimits::default());
        prop_assert!(parsed.is_ok(), "{} refused: {:?}", req.body, parsed.err());
        let r = parsed.unwrap_or_else(|_| unreachable!());
        prop_assert_eq!(r.action, req.action);
        prop_assert_eq!(&r.prompt, &req.prompt);
        prop_assert_eq!(r.model.name(), req.model);
        prop_assert_eq!(&r.image_urls, &req.image_urls);
        prop_assert_eq!(r.count, req.count);
        prop_assert_eq!(r.aspect_ratio.map(|a| a.as_str()), req.ratio);
        prop_assert_eq!(r.resolution.as_str(), req.resolution);
        check_outcome(&req.body, &RequestLimits::default())?;
    }

    /// serde_json's recursion limit (128) turns deep nesting into an error, not a stack overflow.
    #[test]
    fn deep_nesting_is_an_error_not_a_crash(depth in 0usize..200_000, object in any::<bool>(), close in any::<bool>()) {
        let (open, end) = if object { ("{\"a\":", "}") } else { ("[", "]") };
        let mut text = open.repeat(depth);
        if close {
            text.push('1');
            text.push_str(&end.repeat(depth));
        }
        let parsed = serde_json::from_str::<Value>(&text);
        if depth > 127 {
            prop_assert!(parsed.is_err());
        }
        if let Ok(body) = parsed {
            check_outcome(&body, &RequestLimits::default())?;
        }
    }
}

// ---- URL vetting ------------------------------------------------------------------------------

static DEFAULT_FETCHER: LazyLock<Fetcher> = LazyLock::new(|| {
    Fetcher::new(FetchPolicy::default()).unwrap_or_else(|e| panic!("a fetcher: {e}"))
});

fn url_like() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just("http://"),
        Just("https://"),
        Just("HTTP://"),
        Just("http:"),
        Just("http:/"),
        Just("file://"),
        Just("data:"),
        Just(""),
    ];
    let host = prop_oneof![
        "[0-9]{1,12}",
        "(0x)?[0-9a-f]{1,8}(\\.(0x)?[0-9a-f]{1,3}){0,3}",
        "0[0-7]{1,11}(\\.[0-7]{1,4}){0,3}",
        "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}\\.?",
        "\\[[0-9a-f:.]{0,40}\\]",
        "[a-z.]{0,20}localhost\\.?",
        "[a-zA-Z0-9@:%._\\\\-]{0,30}",
        any::<String>(),
    ];
    let rest = prop_oneof![
        Just(String::new()),
        ":[0-9]{0,6}(/.{0,10})?",
        "[/?#@\\\\].{0,20}"
    ];
    (scheme, host, rest).prop_map(|(s, h, r)| format!("{s}{h}{r}"))
}

proptest! {
    /// Whatever `check_url` lets through under the default policy is plain http(s) without
    /// credentials, and an IP literal in it is public.
    #[test]
    fn check_url_never_lets_a_non_global_literal_through(raw in prop_oneof![url_like(), any::<String>()]) {
        if let Ok(url) = DEFAULT_FETCHER.check_url(&raw) {
            prop_assert!(matches!(url.scheme(), "http" | "https"), "{raw}");
            prop_assert!(url.username().is_empty() && url.password().is_none(), "{raw}");
            match url.host() {
                Some(url::Host::Ipv4(ip)) => prop_assert!(is_global(ip.into()), "{raw} → {ip}"),
                Some(url::Host::Ipv6(ip)) => prop_assert!(is_global(ip.into()), "{raw} → {ip}"),
                Some(url::Host::Domain(d)) => {
                    let d = d.trim_end_matches('.').to_ascii_lowercase();
                    prop_assert!(d != "localhost" && !d.ends_with(".localhost"), "{raw}");
                }
                None => prop_assert!(false, "no host: {raw}"),
            }
        }
    }
}

// ---- data: URIs and image headers ---------------------------------------------------------

const MAX_BYTES: usize = 10 * 1024 * 1024;
const MAX_PIXELS: u64 = 50_000_000;
const MIMES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/heic",
    "image/heif",
];

fn encode(w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(w, h, |x, y| image::Rgba([x as u8, y as u8, 7, 200]));
    let mut out = Cursor::new(Vec::new());
    let written = match format {
        // The JPEG encoder takes no alpha channel.
        image::ImageFormat::Jpeg => image::DynamicImage::ImageRgba8(img)
            .to_rgb8()
            .write_to(&mut out, format),
        _ => img.write_to(&mut out, format),
    };
    written.unwrap_or_else(|e| panic!("encoding a {format:?} seed: {e}"));
    out.into_inner()
}

fn bmff(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

/// ftyp + meta(hdlr, iprp(ipco(ispe))) + mdat: what the HEIF header reader walks.
fn heif(w: u32, h: u32) -> Vec<u8> {
    let mut ftyp = b"heic".to_vec();
    ftyp.extend_from_slice(&[0, 0, 0, 0]);
    ftyp.extend_from_slice(b"mif1heic");
    let mut ispe = vec![0, 0, 0, 0];
    ispe.extend_from_slice(&w.to_be_bytes());
    ispe.extend_from_slice(&h.to_be_bytes());
    let iprp = bmff(b"iprp", &bmff(b"ipco", &bmff(b"ispe", &ispe)));
    let mut meta = vec![0, 0, 0, 0];
    meta.extend(bmff(b"hdlr", &[0u8; 24]));
    meta.extend(iprp);
    let mut out = bmff(b"ftyp", &ftyp);
    out.extend(bmff(b"meta", &meta));
    out.extend(bmff(b"mdat", b"not really hevc"));
    out
}

/// One small real image of each accepted format: the seeds that mutations start from.
static SEEDS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    vec![
        encode(7, 5, image::ImageFormat::Png),
        encode(9, 4, image::ImageFormat::Jpeg),
        encode(6, 6, image::ImageFormat::Gif),
        encode(5, 8, image::ImageFormat::WebP),
        heif(640, 480),
    ]
});

/// Overwrites the dimensions in a seed's header with `w` x `h` (PNG with its CRC fixed up), so
/// that bombs and zero sizes reach the checks after a successful header read.
fn with_dimensions(seed: usize, w: u32, h: u32) -> Vec<u8> {
    let mut b = SEEDS[seed].clone();
    match seed {
        0 => {
            b[16..20].copy_from_slice(&w.to_be_bytes());
            b[20..24].copy_from_slice(&h.to_be_bytes());
            let crc = crc32fast::hash(&b[12..29]);
            b[29..33].copy_from_slice(&crc.to_be_bytes());
        }
        1 => {
            if let Some(sof) = b.windows(2).position(|p| p == [0xff, 0xc0]) {
                b[sof + 5..sof + 7].copy_from_slice(&(h as u16).to_be_bytes());
                b[sof + 7..sof + 9].copy_from_slice(&(w as u16).to_be_bytes());
            }
        }
        2 => {
            b[6..8].copy_from_slice(&(w as u16).to_le_bytes());
            b[8..10].copy_from_slice(&(h as u16).to_le_bytes());
        }
        3 => {
            // VP8L: after the chunk header and the signature byte 0x2f, 14-bit width-1 and
            // height-1, then alpha and version bits (kept).
            if let Some(chunk) = b.windows(4).position(|p| p == b"VP8L") {
                let at = chunk + 9;
                let old = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                let packed = (w.wrapping_sub(1) & 0x3fff)
                    | ((h.wrapping_sub(1) & 0x3fff) << 14)
                    | (old & 0xf000_0000);
                b[at..at + 4].copy_from_slice(&packed.to_le_bytes());
            }
        }
        _ => b = heif(w, h),
    }
    b
}

/// What must hold for every sniffed image.
fn check_sniffed(
    result: Result<(&'static str, u32, u32), FetchError>,
    max_pixels: u64,
) -> Result<(), TestCaseError> {
    match result {
        Ok((mime, w, h)) => {
            prop_assert!(MIMES.contains(&mime), "{mime}");
            prop_assert!(w > 0 && h > 0);
            prop_assert!(w <= MAX_SIDE && h <= MAX_SIDE, "{w}x{h}");
            prop_assert!(
                u64::from(w) * u64::from(h) <= max_pixels,
                "{w}x{h} > {max_pixels}"
            );
        }
        Err(FetchError::NotAnImage(m)) => prop_assert!(!m.is_empty()),
        Err(FetchError::TooManyPixels { width, height }) => prop_assert!(
            width > MAX_SIDE
                || height > MAX_SIDE
                || u64::from(width) * u64::from(height) > max_pixels
        ),
        Err(other) => prop_assert!(false, "unexpected error kind: {other:?}"),
    }
    Ok(())
}

fn arb_max_pixels() -> impl Strategy<Value = u64> {
    prop_oneof![Just(MAX_PIXELS), 0u64..100, any::<u64>()]
}

fn magic() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"\x89PNG\r\n\x1a\n".to_vec()),
        Just(vec![0xff, 0xd8, 0xff]),
        Just(b"GIF89a".to_vec()),
        Just(b"GIF87a".to_vec()),
        Just(b"RIFF\0\0\0\0WEBPVP8 ".to_vec()),
        Just(b"RIFF\0\0\0\0WEBPVP8L".to_vec()),
        Just(b"RIFF\0\0\0\0WEBPVP8X".to_vec()),
        Just(b"\0\0\0\x18ftypheic".to_vec()),
        Just(b"\0\0\0\x18ftypmif1".to_vec()),
        Just(Vec::new()),
    ]
}

fn base64_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9+/=]{0,200}",
        "[A-Za-z0-9+/= \t\r\n]{0,200}",
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|b| B64.encode(b)),
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn sniff_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256), max in arb_max_pixels()) {
        check_sniffed(sniff_image(&bytes, max), max)?;
    }

    #[test]
    fn sniff_never_panics_behind_a_magic_number(prefix in magic(), tail in proptest::collection::vec(any::<u8>(), 0..256), max in arb_max_pixels()) {
        let mut bytes = prefix;
        bytes.extend(tail);
        check_sniffed(sniff_image(&bytes, max), max)?;
    }

    #[test]
    fn sniff_never_panics_on_mutated_real_images(seed in 0usize..5, ops in mutations(), max in arb_max_pixels()) {
        let bytes = mutate(SEEDS[seed].clone(), &ops);
        check_sniffed(sniff_image(&bytes, max), max)?;
    }

    #[test]
    fn declared_dimensions_are_bounded_before_decoding(
        seed in 0usize..5,
        w in prop_oneof![0u32..4, 1u32..100_000, any::<u32>()],
        h in prop_oneof![0u32..4, 1u32..100_000, any::<u32>()],
        max in arb_max_pixels(),
    ) {
        check_sniffed(sniff_image(&with_dimensions(seed, w, h), max), max)?;
    }

    #[test]
    fn parse_data_uri_never_panics_on_arbitrary_strings(s in any::<String>()) {
        check_data_uri(&s, MAX_BYTES)?;
        check_data_uri(&format!("data:{s}"), MAX_BYTES)?;
    }

    #[test]
    fn parse_data_uri_never_panics_on_data_uri_shapes(
        scheme in prop_oneof![Just("data:"), Just("DATA:"), Just("data"), Just("dat:")],
        media in prop_oneof![Just("image/png".to_owned()), "[a-zA-Z/+.!#-]{0,16}", any::<String>()],
        params in proptest::collection::vec(prop_oneof![Just("base64".to_owned()), "[a-z]{0,5}=[a-z0-9]{0,5}", ".{0,8}"], 0..4),
        payload in base64_text(),
        max in prop_oneof![Just(MAX_BYTES), 0usize..64],
    ) {
        let mut header = media;
        for p in params {
            header.push(';');
            header.push_str(&p);
        }
        check_data_uri(&format!("{scheme}{header},{payload}"), max)?;
    }

    #[test]
    fn data_uris_of_mutated_images_are_bounded(
        seed in 0usize..5,
        ops in proptest::collection::vec((0.0f64..1.0, 0u8..4, any::<u8>()), 0..8),
        max in prop_oneof![Just(MAX_BYTES), 0usize..2000],
    ) {
        let bytes = mutate(SEEDS[seed].clone(), &ops);
        check_data_uri(&format!("data:image/png;base64,{}", B64.encode(&bytes)), max)?;
    }
}

fn check_data_uri(s: &str, max_bytes: usize) -> Result<(), TestCaseError> {
    match parse_data_uri(s, max_bytes, MAX_PIXELS) {
        Ok(img) => {
            prop_assert!(img.bytes.len() <= max_bytes);
            prop_assert!(MIMES.contains(&img.mime_type));
            check_sniffed(Ok((img.mime_type, img.width, img.height)), MAX_PIXELS)?;
        }
        Err(FetchError::BadDataUri(m) | FetchError::NotAnImage(m)) => prop_assert!(!m.is_empty()),
        Err(FetchError::TooLarge { limit }) => prop_assert_eq!(limit, max_bytes),
        Err(FetchError::TooManyPixels { .. }) => {}
        Err(other) => prop_assert!(false, "unexpected error kind: {other:?}"),
    }
    Ok(())
}
