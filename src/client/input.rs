//! Turning `edit -i` values into the contract's `image_urls` entries: URLs and `data:` URIs pass
//! through untouched, local files become `data:image/<type>;base64,…` URIs. Also the magic-byte
//! sniffing that names an image's type, shared with the output side.
//! Not here: talking to the server, saving results.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::ClientError;

/// An image type the contract's servers accept as input and may hand back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Png,
    Jpeg,
    Webp,
    Gif,
    Heic,
    Heif,
}

impl ImageKind {
    /// The `<type>` in `image/<type>`.
    pub fn mime_subtype(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpeg",
            ImageKind::Webp => "webp",
            ImageKind::Gif => "gif",
            ImageKind::Heic => "heic",
            ImageKind::Heif => "heif",
        }
    }

    /// The file extension used when saving.
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "jpg",
            other => other.mime_subtype(),
        }
    }

    /// Names the type from the first bytes of the file, never from its name: a `.png` that is
    /// really a JPEG would otherwise be sent with a wrong media type.
    pub fn sniff(bytes: &[u8]) -> Option<ImageKind> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Some(ImageKind::Png);
        }
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            return Some(ImageKind::Jpeg);
        }
        if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            return Some(ImageKind::Webp);
        }
        if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            return Some(ImageKind::Gif);
        }
        // HEIF family: an ISO-BMFF `ftyp` box whose major brand says which flavour. AVIF shares
        // the container but is not in the contract's list, so it stays unknown.
        if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
            return match &bytes[8..12] {
                b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" => Some(ImageKind::Heic),
                b"mif1" | b"msf1" | b"heif" => Some(ImageKind::Heif),
                _ => None,
            };
        }
        None
    }

    /// From a `content-type` header value such as `image/jpeg; charset=binary`.
    pub fn from_content_type(value: &str) -> Option<ImageKind> {
        let essence = value.split(';').next()?.trim().to_ascii_lowercase();
        match essence.as_str() {
            "image/png" => Some(ImageKind::Png),
            "image/jpeg" | "image/jpg" => Some(ImageKind::Jpeg),
            "image/webp" => Some(ImageKind::Webp),
            "image/gif" => Some(ImageKind::Gif),
            "image/heic" => Some(ImageKind::Heic),
            "image/heif" => Some(ImageKind::Heif),
            _ => None,
        }
    }

    /// From a file extension, as found at the end of an image URL's path.
    pub fn from_extension(ext: &str) -> Option<ImageKind> {
        match ext.to_ascii_lowercase().as_str() {
            "png" => Some(ImageKind::Png),
            "jpg" | "jpeg" => Some(ImageKind::Jpeg),
            "webp" => Some(ImageKind::Webp),
            "gif" => Some(ImageKind::Gif),
            "heic" => Some(ImageKind::Heic),
            "heif" => Some(ImageKind::Heif),
            _ => None,
        }
    }
}

/// True for values the server fetches or decodes itself.
fn is_remote_or_inline(value: &str) -> bool {
    let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("data:")
}

/// Encodes file contents as the data URI the contract accepts, or says why it can't.
pub fn data_uri(path: &Path, bytes: &[u8]) -> Result<String, ClientError> {
    let kind = ImageKind::sniff(bytes).ok_or_else(|| ClientError::UnknownImageType {
        path: path.to_path_buf(),
    })?;
    Ok(format!(
        "data:image/{};base64,{}",
        kind.mime_subtype(),
        STANDARD.encode(bytes)
    ))
}

/// Resolves every `-i` value before anything is sent, so a bad file fails the command without
/// spending a request (or credits).
pub async fn resolve_inputs(values: &[String]) -> Result<Vec<String>, ClientError> {
    let mut out = Vec::with_capacity(values.len());
    for value in values {
        if is_remote_or_inline(value) {
            out.push(value.clone());
            continue;
        }
        let path = Path::new(value);
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| ClientError::ReadInput {
                path: path.to_path_buf(),
                source,
            })?;
        out.push(data_uri(path, &bytes)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_every_supported_type() {
        assert_eq!(
            ImageKind::sniff(b"\x89PNG\r\n\x1a\nrest"),
            Some(ImageKind::Png)
        );
        assert_eq!(
            ImageKind::sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0]),
            Some(ImageKind::Jpeg)
        );
        assert_eq!(
            ImageKind::sniff(b"RIFF\x10\0\0\0WEBPVP8 "),
            Some(ImageKind::Webp)
        );
        assert_eq!(ImageKind::sniff(b"GIF89a...."), Some(ImageKind::Gif));
        assert_eq!(ImageKind::sniff(b"GIF87a...."), Some(ImageKind::Gif));
        assert_eq!(
            ImageKind::sniff(b"\0\0\0\x18ftypheic\0\0\0\0"),
            Some(ImageKind::Heic)
        );
        assert_eq!(
            ImageKind::sniff(b"\0\0\0\x18ftypmif1\0\0\0\0"),
            Some(ImageKind::Heif)
        );
    }

    #[test]
    fn rejects_unknown_and_short_inputs() {
        assert_eq!(ImageKind::sniff(b""), None);
        assert_eq!(ImageKind::sniff(b"RIFF"), None);
        assert_eq!(ImageKind::sniff(b"\0\0\0\x18ftypavif\0\0\0\0"), None);
        assert_eq!(ImageKind::sniff(b"%PDF-1.7"), None);
    }

    #[test]
    fn content_type_and_extension_mapping() {
        assert_eq!(
            ImageKind::from_content_type("image/JPEG; q=1"),
            Some(ImageKind::Jpeg)
        );
        assert_eq!(ImageKind::from_content_type("text/html"), None);
        assert_eq!(ImageKind::from_extension("JPG"), Some(ImageKind::Jpeg));
        assert_eq!(ImageKind::Jpeg.extension(), "jpg");
        assert_eq!(ImageKind::Jpeg.mime_subtype(), "jpeg");
    }

    #[tokio::test]
    async fn urls_and_data_uris_pass_through_files_are_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.bin");
        std::fs::write(&file, b"GIF89a-xyz").unwrap();
        let values = vec![
            "https://example.test/a.png".to_string(),
            "HTTP://example.test/b.png".to_string(),
            "data:image/png;base64,AAAA".to_string(),
            file.display().to_string(),
        ];
        let out = resolve_inputs(&values).await.unwrap();
        assert_eq!(out[..3], values[..3]);
        assert_eq!(
            out[3],
            format!("data:image/gif;base64,{}", STANDARD.encode(b"GIF89a-xyz"))
        );
    }

    #[tokio::test]
    async fn unknown_file_type_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, b"hello").unwrap();
        let err = resolve_inputs(&[file.display().to_string()])
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::UnknownImageType { .. }));
        assert!(err.to_string().contains("notes.txt"), "{err}");
    }

    #[tokio::test]
    async fn missing_file_names_the_file() {
        let err = resolve_inputs(&["/nonexistent/dir/x.png".to_string()])
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::ReadInput { .. }));
        assert!(err.to_string().contains("/nonexistent/dir/x.png"), "{err}");
    }
}
