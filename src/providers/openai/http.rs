//! The HTTP side shared by the OpenAI-shaped providers (`openai`, `chat`): one reqwest client
//! with the configured timeouts, the bearer key, a POST whose answer is read with a size cap and
//! classified (`errors`), base64 and `data:` URL decoding with the image type sniffed from the
//! bytes, and downloading an image URL the upstream answered with (size- and time-capped, without
//! our key: the URL may be on another host, such as a storage bucket).
//!
//! One client per provider: reqwest pools connections (HTTP/1.1, or HTTP/2 where TLS negotiates
//! it), which is all an images API needs — calls take seconds, not milliseconds.
//! Imports `providers` only, nothing above it.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use reqwest::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT,
};
use url::Url;

use super::errors::upstream_error;
use crate::providers::upstream_error::{read_capped, too_large, transport_error};
use crate::providers::{GeneratedImage, ProviderError, direct};

/// A 4K PNG is ~20–30 MB, ×4/3 in base64; anything far beyond is not an image answer.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Error bodies are a few hundred bytes of JSON or a small HTML page.
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;
/// Downloading an image the upstream made (its URL is valid for an hour at OpenAI).
pub(crate) const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);

const USER_AGENT_VALUE: &str = concat!("nano-banana/", env!("CARGO_PKG_VERSION"));

/// Why a client could not be built; all are configuration mistakes.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the base URL {0} must be an http:// or https:// URL")]
    BaseUrl(String),
    #[error("the API key or organization has characters an HTTP header cannot carry")]
    Header,
    #[error("could not build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

#[derive(Debug)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    /// `Authorization: Bearer …` (marked sensitive) and the like, sent with every call.
    headers: HeaderMap,
    pub(crate) max_response_bytes: usize,
    pub(crate) download_timeout: Duration,
}

impl HttpClient {
    /// `extra`: further headers for every call (`OpenAI-Organization`).
    pub(crate) fn new(
        timeout: Duration,
        connect_timeout: Duration,
        api_key: Option<&str>,
        extra: &[(&'static str, &str)],
    ) -> Result<HttpClient, ClientError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = api_key.map(str::trim).filter(|k| !k.is_empty()) {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| ClientError::Header)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        for (name, value) in extra {
            headers.insert(
                *name,
                HeaderValue::from_str(value).map_err(|_| ClientError::Header)?,
            );
        }
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(connect_timeout)
            .build()
            .map_err(ClientError::Client)?;
        Ok(HttpClient {
            client,
            headers,
            max_response_bytes: MAX_RESPONSE_BYTES,
            download_timeout: DOWNLOAD_TIMEOUT,
        })
    }

    /// One POST: the body of a 2xx answer, or the classified error.
    pub(crate) async fn post(
        &self,
        url: &Url,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, ProviderError> {
        let content_type = HeaderValue::from_str(content_type).map_err(|_| {
            ProviderError::InvalidResponse("request encoding: a bad content type".into())
        })?;
        let mut response = self
            .client
            .post(url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if !status.is_success() {
            // A failed read still leaves the status, which says more than a transport error.
            let body = read_capped(&mut response, MAX_ERROR_BODY_BYTES)
                .await
                .map(|(body, _)| body)
                .unwrap_or_default();
            return Err(upstream_error(status, response.headers(), &body));
        }
        self.read_body(&mut response).await
    }

    async fn read_body(&self, response: &mut reqwest::Response) -> Result<Vec<u8>, ProviderError> {
        let cap = self.max_response_bytes;
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|len| len.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > cap as u64) {
            return Err(too_large(cap));
        }
        let (body, truncated) = read_capped(response, cap).await.map_err(transport_error)?;
        if truncated {
            return Err(too_large(cap));
        }
        Ok(body)
    }

    /// The image at a URL the upstream answered with: a `data:` URL is decoded; an http(s) one
    /// is downloaded within `download_timeout` and the size cap. The image was made (and billed)
    /// already, so a failure here is never retried: `Transport { sent: true }` or an unreadable
    /// answer.
    pub(crate) async fn image_at(&self, url: &str) -> Result<GeneratedImage, ProviderError> {
        if url.starts_with("data:") {
            return decode_data_url(url);
        }
        let parsed = Url::parse(url).map_err(|e| {
            ProviderError::InvalidResponse(format!("the answer's image URL is not a URL: {e}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ProviderError::InvalidResponse(format!(
                "the answer's image URL has the scheme {:?}",
                parsed.scheme()
            )));
        }
        let mut response = self
            .client
            .get(parsed)
            .header(USER_AGENT, USER_AGENT_VALUE)
            .timeout(self.download_timeout)
            .send()
            .await
            .map_err(|e| {
                let message = direct::error_chain(&e.without_url());
                ProviderError::Transport {
                    message: format!("downloading the made image: {message}"),
                    sent: true,
                }
            })?;
        if !response.status().is_success() {
            return Err(ProviderError::InvalidResponse(format!(
                "downloading the made image answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let body = self.read_body(&mut response).await.map_err(|e| match e {
            ProviderError::Transport { message, .. } => ProviderError::Transport {
                message: format!("downloading the made image: {message}"),
                sent: true,
            },
            other => other,
        })?;
        image_from_bytes(body)
    }
}

/// Base64 (standard alphabet; padding and line breaks tolerated) to an image.
pub(crate) fn decode_base64_image(b64: &str) -> Result<GeneratedImage, ProviderError> {
    let cleaned: String;
    let text = if b64.contains(['\n', '\r', ' ']) {
        cleaned = b64.split_whitespace().collect();
        &cleaned
    } else {
        b64
    };
    let bytes = BASE64
        .decode(text)
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim_end_matches('='))
        })
        .map_err(|e| ProviderError::InvalidResponse(format!("the image is not base64: {e}")))?;
    image_from_bytes(bytes)
}

/// `data:image/png;base64,…` to an image (the declared type is checked against the bytes).
pub(crate) fn decode_data_url(url: &str) -> Result<GeneratedImage, ProviderError> {
    let rest = url.strip_prefix("data:").unwrap_or(url);
    let (head, data) = rest.split_once(',').ok_or_else(|| {
        ProviderError::InvalidResponse("the image's data URL has no comma".into())
    })?;
    if !head.ends_with(";base64") {
        return Err(ProviderError::InvalidResponse(format!(
            "the image's data URL is not base64 ({head})"
        )));
    }
    decode_base64_image(data)
}

fn image_from_bytes(bytes: Vec<u8>) -> Result<GeneratedImage, ProviderError> {
    let mime_type = sniff(&bytes).ok_or_else(|| {
        ProviderError::InvalidResponse(format!(
            "the answer's image is not PNG, JPEG, WebP or GIF ({} bytes)",
            bytes.len()
        ))
    })?;
    Ok(GeneratedImage {
        bytes: Bytes::from(bytes),
        mime_type: mime_type.to_owned(),
    })
}

/// The image type from the first bytes; upstreams (and compatible servers) do not always make
/// what was asked (`output_format: png`), so the bytes decide.
pub(crate) fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else {
        None
    }
}

/// `base` with these path segments appended (keeping any path prefix of its own).
pub(crate) fn endpoint(base: &Url, segments: &[&str]) -> Result<Url, ClientError> {
    if !matches!(base.scheme(), "http" | "https") {
        return Err(ClientError::BaseUrl(base.to_string()));
    }
    let mut url = base.clone();
    url.set_fragment(None);
    url.set_query(None);
    url.path_segments_mut()
        .map_err(|()| ClientError::BaseUrl(base.to_string()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\nrest";

    #[test]
    fn images_are_typed_by_their_bytes() {
        assert_eq!(sniff(PNG), Some("image/png"));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"GIF89a.."), Some("image/gif"));
        assert_eq!(sniff(b"<html>"), None);
    }

    #[test]
    fn base64_and_data_urls_decode() {
        let b64 = BASE64.encode(PNG);
        assert_eq!(&decode_base64_image(&b64).unwrap().bytes[..], PNG);
        let wrapped = format!("{}\n{}", &b64[..8], &b64[8..]);
        assert_eq!(&decode_base64_image(&wrapped).unwrap().bytes[..], PNG);
        let url = format!("data:image/png;base64,{b64}");
        let image = decode_data_url(&url).unwrap();
        assert_eq!(image.mime_type, "image/png");
        assert!(matches!(
            decode_data_url("data:image/png,raw"),
            Err(ProviderError::InvalidResponse(_))
        ));
        assert!(matches!(
            decode_base64_image("@@not base64@@"),
            Err(ProviderError::InvalidResponse(_))
        ));
        assert!(matches!(
            decode_base64_image(&BASE64.encode(b"plain text")),
            Err(ProviderError::InvalidResponse(_))
        ));
    }

    #[test]
    fn endpoints_keep_the_base_path() {
        let join = |base: &str| {
            endpoint(&Url::parse(base).unwrap(), &["images", "generations"])
                .unwrap()
                .to_string()
        };
        assert_eq!(
            join("https://api.openai.com/v1"),
            "https://api.openai.com/v1/images/generations"
        );
        assert_eq!(
            join("http://127.0.0.1:8080/v1/"),
            "http://127.0.0.1:8080/v1/images/generations"
        );
        assert_eq!(join("http://h"), "http://h/images/generations");
        assert!(endpoint(&Url::parse("ftp://h").unwrap(), &["x"]).is_err());
    }
}
