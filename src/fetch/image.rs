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

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD as B64;

    use super::super::tests::{encode, fetcher, patched_png, png};
    use super::*;
    use crate::fetch::FetchPolicy;

    // ---- fixtures -------------------------------------------------------------------------

    fn bmff(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    /// A minimal HEIF: ftyp + meta(iprp(ipco(ispe...))). Enough for the header reader.
    fn heif(major: &[u8; 4], compat: &[&[u8; 4]], sizes: &[(u32, u32)]) -> Vec<u8> {
        let mut ftyp = major.to_vec();
        ftyp.extend_from_slice(&0u32.to_be_bytes());
        for c in compat {
            ftyp.extend_from_slice(&c[..]);
        }
        let mut ipco = Vec::new();
        for (w, h) in sizes {
            let mut ispe = vec![0, 0, 0, 0];
            ispe.extend_from_slice(&w.to_be_bytes());
            ispe.extend_from_slice(&h.to_be_bytes());
            ipco.extend(bmff(b"ispe", &ispe));
        }
        let iprp = bmff(b"iprp", &bmff(b"ipco", &ipco));
        let mut meta = vec![0, 0, 0, 0];
        meta.extend(bmff(b"hdlr", &[0u8; 24]));
        meta.extend(iprp);
        let mut out = bmff(b"ftyp", &ftyp);
        out.extend(bmff(b"meta", &meta));
        out.extend(bmff(b"mdat", b"not really hevc"));
        out
    }

    fn data_uri(mime: &str, bytes: &[u8]) -> String {
        format!("data:{mime};base64,{}", B64.encode(bytes))
    }

    // ---- data: URIs --------------------------------------------------------------------------

    const MAX: usize = 10 * 1024 * 1024;
    const PIXELS: u64 = 50_000_000;

    #[tokio::test]
    async fn data_uris_are_decoded_and_sniffed() {
        let p = png(5, 2);
        let img = parse_data_uri(&data_uri("image/png", &p), MAX, PIXELS).unwrap();
        assert_eq!((img.mime_type, img.width, img.height), ("image/png", 5, 2));
        assert_eq!(&img.bytes[..], &p[..]);

        // The sniffed type wins over the declared one.
        let img = parse_data_uri(&data_uri("image/jpeg", &p), MAX, PIXELS).unwrap();
        assert_eq!(img.mime_type, "image/png");

        // Parameters, case, line wrapping and missing padding are tolerated.
        let b64 = B64.encode(&p);
        let wrapped: Vec<String> = b64
            .as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        for uri in [
            format!("data:image/png;charset=utf-8;base64,{b64}"),
            format!("DATA:Image/PNG;BASE64,{b64}"),
            format!("data:image/png;base64,{}", wrapped.join("\r\n")),
            format!("data:image/png;base64, {} ", wrapped.join("\n")),
            format!("data:image/png;base64,{}", b64.trim_end_matches('=')),
        ] {
            let img = parse_data_uri(&uri, MAX, PIXELS).unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert_eq!(&img.bytes[..], &p[..]);
        }

        // load_image routes data: URIs here, with the policy's limits.
        let f = fetcher(FetchPolicy {
            max_image_bytes: 100,
            ..FetchPolicy::default()
        });
        assert!(
            f.load_image(&format!("Data:image/png;base64,{b64}"))
                .await
                .is_ok()
        );
        let big = png(64, 64);
        assert!(big.len() > 100);
        assert!(
            f.load_image(&data_uri("image/png", &big))
                .await
                .unwrap_err()
                .is_too_large()
        );
    }

    #[test]
    fn bad_data_uris_are_refused() {
        let b64 = B64.encode(png(2, 2));
        for uri in [
            format!("data:image/png,{b64}"),
            format!("data:image/png;base64{b64}"),
            format!("data:text/plain;base64,{b64}"),
            format!("data:;base64,{b64}"),
            format!("data:,{b64}"),
            format!("data:image/;base64,{b64}"),
            format!("data:image;base64,{b64}"),
            format!("data:image/png;base64;x=y,{b64}"),
            format!("data:image/png;bogus;base64,{b64}"),
            format!("data:image/p g;base64,{b64}"),
            "data:image/png;base64,!!!!".to_string(),
            "data:image/png;base64,iVBORw0KGgo-_".to_string(),
            "data:image/png;base64,A".to_string(),
            format!("data:image/png;base64,{b64}%20"),
            // Whitespace (decoded again without it) and then a byte that is not base64.
            format!("data:image/png;base64,{b64}\n!!!!"),
            "datum:image/png;base64,AAAA".to_string(),
        ] {
            let err = parse_data_uri(&uri, MAX, PIXELS).unwrap_err();
            assert!(matches!(err, FetchError::BadDataUri(_)), "{uri}: {err:?}");
        }
        // Valid base64 that is not an image.
        let err = parse_data_uri(
            &data_uri("image/png", b"GIF8 nope, plain text"),
            MAX,
            PIXELS,
        );
        assert!(matches!(err, Err(FetchError::NotAnImage(_))), "{err:?}");
        let err = parse_data_uri("data:image/png;base64,", MAX, PIXELS);
        assert!(matches!(err, Err(FetchError::NotAnImage(_))), "{err:?}");
        // A bomb inside a data URI.
        let err = parse_data_uri(
            &data_uri("image/png", &patched_png(100_000, 100_000)),
            MAX,
            PIXELS,
        );
        assert!(
            matches!(err, Err(FetchError::TooManyPixels { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn data_uri_size_is_checked_before_decoding() {
        // Invalid base64, but far over the cap: refused for size without being decoded.
        let uri = format!("data:image/png;base64,{}", "!".repeat(4000));
        assert!(matches!(
            parse_data_uri(&uri, 100, PIXELS),
            Err(FetchError::TooLarge { limit: 100 })
        ));
        // Whitespace does not count towards the size.
        let p = png(1, 1);
        let spaced = B64
            .encode(&p)
            .chars()
            .flat_map(|c| [c, '\n'])
            .collect::<String>();
        assert!(
            parse_data_uri(&format!("data:image/png;base64,{spaced}"), p.len(), PIXELS).is_ok()
        );
        // Exactly at the cap passes; one byte under it does not.
        let uri = data_uri("image/png", &p);
        assert!(parse_data_uri(&uri, p.len(), PIXELS).is_ok());
        assert!(
            parse_data_uri(&uri, p.len() - 1, PIXELS)
                .unwrap_err()
                .is_too_large()
        );
        let unpadded = uri.trim_end_matches('=');
        assert!(parse_data_uri(unpadded, p.len(), PIXELS).is_ok());
        assert!(
            parse_data_uri(unpadded, p.len() - 1, PIXELS)
                .unwrap_err()
                .is_too_large()
        );
    }

    // ---- sniffing ---------------------------------------------------------------------------

    #[test]
    fn sniffs_every_supported_format() {
        use image::ImageFormat;
        for (format, mime) in [
            (ImageFormat::Png, "image/png"),
            (ImageFormat::Jpeg, "image/jpeg"),
            (ImageFormat::Gif, "image/gif"),
            (ImageFormat::WebP, "image/webp"),
        ] {
            let bytes = encode(7, 3, format);
            assert_eq!(
                sniff_image(&bytes, PIXELS).unwrap(),
                (mime, 7, 3),
                "{format:?}"
            );
        }
        let heic = heif(b"heic", &[b"mif1", b"heic"], &[(320, 240), (4032, 3024)]);
        assert_eq!(
            sniff_image(&heic, PIXELS).unwrap(),
            ("image/heic", 4032, 3024)
        );
        let heif_generic = heif(b"mif1", &[b"mif1"], &[(640, 480)]);
        assert_eq!(
            sniff_image(&heif_generic, PIXELS).unwrap(),
            ("image/heif", 640, 480)
        );
        let heif_hevc = heif(b"mif1", &[b"mif1", b"heic"], &[(640, 480)]);
        assert_eq!(
            sniff_image(&heif_hevc, PIXELS).unwrap(),
            ("image/heic", 640, 480)
        );
    }

    #[test]
    fn refuses_non_images_and_bombs_from_the_header() {
        for bytes in [
            &b""[..],
            b"hello",
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            b"BM\x00\x00\x00\x00",
            b"\x89PNG\r\n\x1a\n",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR garbage",
            b"GIF89a",
            b"RIFF\x00\x00\x00\x00WEBPVP8 ",
            b"\xff\xd8\xff",
        ] {
            let err = sniff_image(bytes, PIXELS).unwrap_err();
            assert!(
                matches!(err, FetchError::NotAnImage(_)),
                "{bytes:?}: {err:?}"
            );
        }
        let avif = heif(b"avif", &[b"mif1", b"avif"], &[(64, 64)]);
        assert!(matches!(
            sniff_image(&avif, PIXELS),
            Err(FetchError::NotAnImage(_))
        ));
        let no_ispe = heif(b"heic", &[], &[]);
        assert!(matches!(
            sniff_image(&no_ispe, PIXELS),
            Err(FetchError::NotAnImage(_))
        ));
        let truncated = &heif(b"heic", &[], &[(64, 64)])[..40];
        assert!(matches!(
            sniff_image(truncated, PIXELS),
            Err(FetchError::NotAnImage(_))
        ));

        let too_many =
            |r: Result<_, FetchError>| matches!(r, Err(FetchError::TooManyPixels { .. }));
        // JPEG: patch the SOF0 frame size; GIF: the logical screen and the first frame.
        let mut jpeg = encode(8, 8, image::ImageFormat::Jpeg);
        let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xff, 0xdc, 0xff, 0xdc]);
        assert!(matches!(
            sniff_image(&jpeg, PIXELS),
            Err(FetchError::TooManyPixels {
                width: 65_500,
                height: 65_500
            })
        ));
        let mut gif = encode(8, 8, image::ImageFormat::Gif);
        gif[6..10].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        let img_desc = gif.iter().position(|b| *b == 0x2c).unwrap();
        gif[img_desc + 5..img_desc + 9].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(
            too_many(sniff_image(&gif, PIXELS)),
            "{:?}",
            sniff_image(&gif, PIXELS)
        );
        assert!(too_many(sniff_image(
            &patched_png(100_000, 100_000),
            PIXELS
        )));
        // Side limit even when the area is small.
        assert!(too_many(sniff_image(&patched_png(16_385, 1), PIXELS)));
        assert!(sniff_image(&patched_png(16_384, 1), PIXELS).is_ok());
        // Area limit with both sides under MAX_IMAGE_SIDE.
        assert!(too_many(sniff_image(&patched_png(10_000, 5_001), PIXELS)));
        assert!(sniff_image(&patched_png(10_000, 5_000), PIXELS).is_ok());
        assert!(too_many(sniff_image(
            &heif(b"heic", &[], &[(20_000, 20_000)]),
            PIXELS
        )));
        assert!(matches!(
            sniff_image(&patched_png(0, 10), PIXELS),
            Err(FetchError::NotAnImage(_)) | Err(FetchError::TooManyPixels { .. })
        ));
    }
}
