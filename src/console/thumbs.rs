//! `GET /console/thumbs/{key}`: a small JPEG of a stored image, made on first request and kept
//! in the image store under its own prefix (`thumbs/`), so later requests only read it. Like
//! `/images/{key}`, the unguessable key is the permission.

use std::io::Cursor;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{
    http::AppState,
    storage::images::{IMMUTABLE, StoreError},
};

/// The longest side of a thumbnail, in pixels (shown at 160 CSS pixels: sharp on 2x screens).
const SIDE: u32 = 320;

pub async fn get(State(state): State<AppState>, Path(key): Path<String>) -> Response {
    match thumbnail(&state, &key).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, IMMUTABLE),
            ],
            bytes,
        )
            .into_response(),
        Err(StoreError::NotFound | StoreError::InvalidKey) => {
            (StatusCode::NOT_FOUND, "No image with that name.").into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "could not make a thumbnail");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The thumbnail could not be made.",
            )
                .into_response()
        }
    }
}

async fn thumbnail(state: &AppState, key: &str) -> Result<Bytes, StoreError> {
    match state.images.read_thumbnail(key).await {
        Err(StoreError::NotFound) => {}
        other => return other,
    }
    let (original, _) = state.images.read(key).await?;
    let small = tokio::task::spawn_blocking(move || shrink(&original))
        .await
        .map_err(|e| StoreError::Write(std::io::Error::other(e)))?
        .map_err(|e| StoreError::Write(std::io::Error::other(e)))?;
    let small = Bytes::from(small);
    if let Err(e) = state.images.put_thumbnail(key, small.clone()).await {
        // Served anyway; made again next time.
        tracing::warn!(error = %e, "could not keep a thumbnail");
    }
    Ok(small)
}

/// A JPEG at most `SIDE` pixels on its longer side.
fn shrink(original: &[u8]) -> Result<Vec<u8>, image::ImageError> {
    let mut reader = image::ImageReader::new(Cursor::new(original)).with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(crate::domain::MAX_IMAGE_SIDE);
    limits.max_image_height = Some(crate::domain::MAX_IMAGE_SIDE);
    limits.max_alloc = Some(1 << 30);
    reader.limits(limits);
    let image = reader.decode()?.thumbnail(SIDE, SIDE).to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80).encode_image(&image)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thumbnail_is_a_small_jpeg() {
        let big = image::RgbImage::from_pixel(1000, 500, image::Rgb([200, 30, 30]));
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(big)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let small = shrink(&png).unwrap();
        let decoded = image::load_from_memory(&small).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (320, 160));
        assert_eq!(&small[..2], &[0xFF, 0xD8]);
        assert!(shrink(b"not an image").is_err());
    }
}
