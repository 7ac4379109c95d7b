//! The HTTP side of the client: the two contract endpoints, image downloads, and the mapping of
//! whatever comes back (contract bodies, error bodies, proxies' HTML pages) onto `ClientError`.
//! Not here: request bodies, polling policy, saving.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::output::FetchedImage;
use super::{ClientError, ClientOptions};
use crate::api::ErrorCode;

/// Long enough for a slow TLS handshake, short enough that a wrong `--base-url` fails fast
/// instead of hanging for the whole `--timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of an unexpected body an error message quotes.
const EXCERPT_CHARS: usize = 200;

pub struct Api {
    http: reqwest::Client,
    /// Without a trailing slash, so endpoint paths can be appended; may carry a path prefix
    /// (a server mounted under `/api`).
    base: String,
    base_origin: url::Origin,
    token: String,
    timeout_secs: u64,
}

impl Api {
    pub fn new(options: &ClientOptions) -> Result<Api, ClientError> {
        let token = match options.token.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => return Err(ClientError::MissingToken),
        };
        let base = options.base_url.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&base).map_err(|e| ClientError::BadBaseUrl {
            url: options.base_url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::BadBaseUrl {
                url: options.base_url.clone(),
                reason: "only http and https are supported".to_string(),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(Duration::from_secs(options.timeout.max(1)))
            .user_agent(concat!("nano-banana/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::HttpSetup)?;
        Ok(Api {
            http,
            base,
            base_origin: parsed.origin(),
            token,
            timeout_secs: options.timeout,
        })
    }

    /// `POST /nano-banana/images`. Returns the success body (sync result or async ticket).
    pub async fn post_images(&self, body: &Value) -> Result<Value, ClientError> {
        self.post_contract("/nano-banana/images", body).await
    }

    /// `POST /nano-banana/tasks` with `retrieve`. `None` for the contract's bare `{}`.
    pub async fn retrieve_task(&self, id: &str) -> Result<Option<Value>, ClientError> {
        let record = self
            .post_contract(
                "/nano-banana/tasks",
                &json!({"action": "retrieve", "id": id}),
            )
            .await?;
        let empty = record.as_object().is_some_and(|o| o.is_empty());
        Ok((!empty).then_some(record))
    }

    async fn post_contract(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport(&url, e))?;
        let status = response.status();
        let header_trace = response
            .headers()
            .get("x-trace-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(&url, e))?;
        interpret(status, header_trace, &bytes)
    }

    /// Fetches one `image_url`. The token goes only to the server it was meant for: image URLs
    /// may point at a CDN or any host the server chose.
    pub async fn fetch_image(&self, raw_url: &str) -> Result<FetchedImage, ClientError> {
        if let Some(rest) = raw_url.strip_prefix("data:") {
            return decode_data_uri(raw_url, rest);
        }
        let parsed = url::Url::parse(raw_url).map_err(|e| ClientError::Download {
            url: raw_url.to_string(),
            reason: format!("not a URL ({e})"),
        })?;
        let mut request = self.http.get(parsed.clone());
        if parsed.origin() == self.base_origin {
            request = request.bearer_auth(&self.token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(raw_url, e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(ClientError::Download {
                url: raw_url.to_string(),
                reason: format!("HTTP {status}"),
            });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(raw_url, e))?;
        Ok(FetchedImage {
            url: raw_url.to_string(),
            bytes,
            content_type,
        })
    }

    fn transport(&self, url: &str, error: reqwest::Error) -> ClientError {
        if error.is_timeout() {
            ClientError::Timeout {
                secs: self.timeout_secs,
            }
        } else {
            ClientError::Transport {
                url: url.to_string(),
                source: error,
            }
        }
    }
}

/// Maps a response onto the contract: an error body wins whatever the status (servers and
/// callbacks both use it), a JSON success needs a 2xx, anything else is quoted back.
pub fn interpret(
    status: StatusCode,
    header_trace: Option<String>,
    bytes: &[u8],
) -> Result<Value, ClientError> {
    let unexpected = || ClientError::UnexpectedResponse {
        status: status.as_u16(),
        excerpt: excerpt(bytes),
    };
    let value: Value = serde_json::from_slice(bytes).map_err(|_| unexpected())?;
    if let Some(error) = contract_error(&value, Some(status.as_u16()), header_trace) {
        return Err(error);
    }
    if !status.is_success() || !value.is_object() {
        return Err(unexpected());
    }
    Ok(value)
}

/// The `ClientError::Api` for a body shaped `{success:false, error:{code,message}, trace_id}`.
pub fn contract_error(
    body: &Value,
    status: Option<u16>,
    fallback_trace: Option<String>,
) -> Option<ClientError> {
    let failed = body.get("success") == Some(&Value::Bool(false));
    let error = body.get("error").filter(|e| e.is_object());
    if !failed && error.is_none() {
        return None;
    }
    let field = |name: &str| {
        error
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Some(ClientError::Api {
        status,
        code: ErrorCode::parse(&field("code").unwrap_or_else(|| "unknown".to_string())),
        message: field("message").unwrap_or_default(),
        trace_id: body
            .get("trace_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(fallback_trace),
    })
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return "(empty body)".to_string();
    }
    let mut short: String = collapsed.chars().take(EXCERPT_CHARS).collect();
    if short.len() < collapsed.len() {
        short.push('…');
    }
    short
}

fn decode_data_uri(raw: &str, rest: &str) -> Result<FetchedImage, ClientError> {
    let bad = |reason: &str| ClientError::Download {
        url: raw.chars().take(40).collect(),
        reason: reason.to_string(),
    };
    let (header, data) = rest
        .split_once(',')
        .ok_or_else(|| bad("data URI without ','"))?;
    let media = header
        .strip_suffix(";base64")
        .ok_or_else(|| bad("data URI is not base64"))?;
    let bytes = STANDARD
        .decode(data.trim())
        .map_err(|_| bad("data URI has invalid base64"))?;
    Ok(FetchedImage {
        url: raw.to_string(),
        bytes: bytes.into(),
        content_type: Some(media.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(base: &str, token: Option<&str>) -> ClientOptions {
        ClientOptions {
            base_url: base.to_string(),
            token: token.map(str::to_string),
            json: false,
            timeout: 5,
        }
    }

    #[test]
    fn error_body_maps_to_api_error_with_trace_id() {
        let body = br#"{"success":false,"error":{"code":"used_up","message":"balance too low"},"trace_id":"t-9"}"#;
        let err = interpret(StatusCode::FORBIDDEN, Some("hdr".into()), body).unwrap_err();
        assert_eq!(err.to_string(), "used_up: balance too low (trace_id t-9)");
        assert!(matches!(
            err,
            ClientError::Api {
                status: Some(403),
                ..
            }
        ));
    }

    #[test]
    fn header_trace_id_is_the_fallback() {
        let body = br#"{"success":false,"error":{"code":"no_api","message":"nope"}}"#;
        let err = interpret(StatusCode::NOT_FOUND, Some("hdr-1".into()), body).unwrap_err();
        assert_eq!(err.to_string(), "no_api: nope (trace_id hdr-1)");
        let err = interpret(StatusCode::NOT_FOUND, None, body).unwrap_err();
        assert_eq!(err.to_string(), "no_api: nope");
    }

    #[test]
    fn non_json_quotes_status_and_excerpt() {
        let page = format!(
            "<html>\n  <h1>502 Bad Gateway</h1>{}</html>",
            "x".repeat(500)
        );
        let err = interpret(StatusCode::BAD_GATEWAY, None, page.as_bytes()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("502"), "{text}");
        assert!(text.contains("<html> <h1>502 Bad Gateway</h1>"), "{text}");
        assert!(text.len() < 400, "{text}");
        let err = interpret(StatusCode::OK, None, b"").unwrap_err();
        assert!(err.to_string().contains("(empty body)"));
    }

    #[test]
    fn json_without_error_shape_on_failure_status_is_unexpected() {
        let err = interpret(StatusCode::INTERNAL_SERVER_ERROR, None, br#"{"oops":1}"#).unwrap_err();
        assert!(matches!(
            err,
            ClientError::UnexpectedResponse { status: 500, .. }
        ));
    }

    #[test]
    fn missing_or_blank_token_is_a_clear_error() {
        for token in [None, Some(""), Some("  ")] {
            let err = Api::new(&options("http://127.0.0.1:1", token))
                .err()
                .unwrap();
            assert!(err.to_string().contains("NANO_BANANA_TOKEN"), "{err}");
        }
    }

    #[test]
    fn base_url_must_be_http() {
        let err = Api::new(&options("ftp://x", Some("t"))).err().unwrap();
        assert!(matches!(err, ClientError::BadBaseUrl { .. }));
        let err = Api::new(&options("not a url", Some("t"))).err().unwrap();
        assert!(matches!(err, ClientError::BadBaseUrl { .. }));
    }

    #[tokio::test]
    async fn data_uri_images_are_decoded_locally() {
        let api = Api::new(&options("http://127.0.0.1:1/", Some("t"))).unwrap();
        let img = api
            .fetch_image("data:image/webp;base64,UklGRg==")
            .await
            .unwrap();
        assert_eq!(&img.bytes[..], b"RIFF");
        assert_eq!(img.content_type.as_deref(), Some("image/webp"));
        assert!(api.fetch_image("data:image/png,raw").await.is_err());
    }
}
