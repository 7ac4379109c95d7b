//! `data:` URIs and sniffing: what image bytes are. Parses `data:image/*;base64,` URIs, refusing
//! an oversized payload from its encoded length before decoding it, and identifies the format
//! from magic numbers and the dimensions from the header alone, so a decompression bomb is
//! refused before any pixel is decoded.
//!
//! What does not live here: downloading (`mod.rs`), URL and address rules (`policy.rs`,
//! `addresses.rs`), and pixel decoding, which the fetch code never does.

use std::io::Cursor;

use base64::Engine as _;
use bytes::Bytes;

use super::FetchError;
use super::policy::has_scheme;
use crate::domain::MAX_IMAGE_SIDE;
use crate::providers::InputImage;

/// The most bytes `n` base64 characters (no whitespace, no padding) can decode to.
fn decoded_len_at_most(n: usize) -> usize {
    n / 4 * 3 + n % 4 * 3 / 4
}

/// Parses `data:image/<type>[;param=value]*;base64,<data>`.
///
/// ASCII whitespace inside the base64 is tolerated (line-wrapped output of `base64(1)` is common)
/// and padding is optional, as in the Fetch standard's forgiving base64. The declared media type
/// must be `image/*` but is otherwise ignored: the sniffed type wins.
pub fn parse_data_uri(
    s: &str,
    max_bytes: usize,
    max_pixels: u64,
) -> Result<InputImage, FetchError> {
    let bad = |m: &str| FetchError::BadDataUri(m.to_string());
    if !has_scheme(s, "data") {
        return Err(bad("does not start with data:"));
    }
    let (header, payload) = s[5..]
        .split_once(',')
        .ok_or_else(|| bad("no ',' before the data"))?;
    let mut params = header.split(';');
    let media_type = params.next().unwrap_or("").trim();
    let (kind, subtype) = media_type
        .split_once('/')
        .ok_or_else(|| bad("no image media type"))?;
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    if !kind.eq_ignore_ascii_case("image") || !token(subtype) {
        return Err(bad("the media type is not image/*"));
    }
    let params: Vec<&str> = params.map(str::trim).collect();
    match params.split_last() {
        Some((last, rest)) if last.eq_ignore_ascii_case("base64") => {
            if rest
                .iter()
                .any(|p| !p.split_once('=').is_some_and(|(k, _)| token(k)))
            {
                return Err(bad("malformed media type parameter"));
            }
        }
        _ => return Err(bad("only ;base64 data URIs are accepted")),
    }

    // Refuse from the encoded length before allocating anything for the decoded bytes. The
    // exact count (whitespace and padding left out) is a byte-by-byte pass over megabytes, so
    // it is made only when the whole length could decode to more than the limit.
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c');
    if decoded_len_at_most(payload.len()) > max_bytes {
        let significant = payload.bytes().filter(|b| !is_ws(b)).count();
        let pads = payload
            .bytes()
            .rev()
            .filter(|b| !is_ws(b))
            .take(2)
            .filter(|b| *b == b'=')
            .count();
        if decoded_len_at_most(significant - pads) > max_bytes {
            return Err(FetchError::TooLarge { limit: max_bytes });
        }
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    // Whitespace is not base64: when the decoder stops at some, decode a copy without it.
    let decoded = match engine.decode(payload) {
        Err(_) if payload.bytes().any(|b| is_ws(&b)) => {
            engine.decode(payload.bytes().filter(|b| !is_ws(b)).collect::<Vec<u8>>())
        }
        decoded => decoded,
    }
    .map_err(|e| FetchError::BadDataUri(format!("invalid base64: {e}")))?;
    if decoded.len() > max_bytes {
        return Err(FetchError::TooLarge { limit: max_bytes });
    }
    let (mime_type, width, height) = sniff_image(&decoded, max_pixels)?;
    Ok(InputImage {
        bytes: Bytes::from(decoded),
        mime_type,
        width,
        height,
    })
}

/// Identifies the format from magic numbers and reads the dimensions from the header only.
/// Refuses `TooManyPixels` when a side exceeds [`MAX_IMAGE_SIDE`] or `w * h > max_pixels`.
pub fn sniff_image(bytes: &[u8], max_pixels: u64) -> Result<(&'static str, u32, u32), FetchError> {
    use image::ImageFormat;
    let raster = |format: ImageFormat| -> Result<(u32, u32), FetchError> {
        image::ImageReader::with_format(Cursor::new(bytes), format)
            .into_dimensions()
            .map_err(|e| FetchError::NotAnImage(format!("unreadable {format:?} header: {e}")))
    };
    let (mime, (width, height)) = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        ("image/png", raster(ImageFormat::Png)?)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        ("image/jpeg", raster(ImageFormat::Jpeg)?)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        ("image/gif", raster(ImageFormat::Gif)?)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        ("image/webp", raster(ImageFormat::WebP)?)
    } else if let Some(mime) = heif_mime(bytes) {
        (mime, heif_dimensions(bytes)?)
    } else {
        return Err(FetchError::NotAnImage("unrecognised format".into()));
    };
    if width == 0 || height == 0 {
        return Err(FetchError::NotAnImage(format!(
            "{mime} with a zero dimension"
        )));
    }
    // Larger sides are refused whatever `max_pixels` says: no upstream takes them and some
    // decoders misbehave near `u16`/`i32` limits.
    if width > MAX_IMAGE_SIDE
        || height > MAX_IMAGE_SIDE
        || u64::from(width) * u64::from(height) > max_pixels
    {
        return Err(FetchError::TooManyPixels { width, height });
    }
    Ok((mime, width, height))
}

const HEIC_BRANDS: [&[u8; 4]; 6] = [b"heic", b"heix", b"hevc", b"heim", b"heis", b"hevm"];
const HEIF_BRANDS: [&[u8; 4]; 2] = [b"mif1", b"msf1"];

/// `image/heic` or `image/heif` from the `ftyp` box's major brand. Generic HEIF (`mif1`) files
/// that also list an HEVC brand are HEIC; AVIF (`avif`, `avis` major brands) is not accepted.
fn heif_mime(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < 16 || &bytes[4..8] != b"ftyp" {
        return None;
    }
    let major = &bytes[8..12];
    if HEIC_BRANDS.iter().any(|b| &b[..] == major) {
        return Some("image/heic");
    }
    if HEIF_BRANDS.iter().any(|b| &b[..] == major) {
        let size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let compatible = bytes.get(16..size.min(bytes.len())).unwrap_or(&[]);
        let is_hevc = compatible
            .chunks_exact(4)
            .any(|c| HEIC_BRANDS.iter().any(|b| &b[..] == c));
        return Some(if is_hevc { "image/heic" } else { "image/heif" });
    }
    None
}

/// Reads the dimensions from the `ispe` properties (`meta` → `iprp` → `ipco` → `ispe`). A file
/// holds one per item (thumbnails, tiles, the grid); the largest is taken, which is the full
/// image for grids and errs on the refusing side otherwise.
fn heif_dimensions(bytes: &[u8]) -> Result<(u32, u32), FetchError> {
    let not = |m: &str| FetchError::NotAnImage(format!("HEIF: {m}"));
    let meta = find_box(bytes, b"meta").ok_or_else(|| not("no meta box"))?;
    // `meta` is a full box: version and flags come first.
    let iprp = find_box(meta.get(4..).ok_or_else(|| not("short meta"))?, b"iprp")
        .ok_or_else(|| not("no iprp box"))?;
    let ipco = find_box(iprp, b"ipco").ok_or_else(|| not("no ipco box"))?;
    let mut best: Option<(u32, u32)> = None;
    for (kind, body) in boxes(ipco) {
        if &kind != b"ispe" || body.len() < 12 {
            continue;
        }
        let w = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        let h = u32::from_be_bytes([body[8], body[9], body[10], body[11]]);
        let area = u64::from(w) * u64::from(h);
        if best.is_none_or(|(bw, bh)| area > u64::from(bw) * u64::from(bh)) {
            best = Some((w, h));
        }
    }
    best.ok_or_else(|| not("no ispe property"))
}

fn find_box<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| k == kind).map(|(_, body)| body)
}

/// Iterates ISO-BMFF boxes as (type, body); stops at the first malformed header.
fn boxes(mut data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 8 {
            return None;
        }
        let size32 = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let kind = [data[4], data[5], data[6], data[7]];
        let (header, size) = match size32 {
            0 => (8, data.len()),
            1 => {
                let large = data.get(8..16)?;
                let mut b = [0u8; 8];
                b.copy_from_slice(large);
                (16, usize::try_from(u64::from_be_bytes(b)).ok()?)
            }
            n => (8, n as usize),
        };
        if size < header || size > data.len() {
            data = &[];
            return None;
        }
        let body = &data[header..size];
        data = &data[size..];
        Some((kind, body))
    })
}
