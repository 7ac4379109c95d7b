//! The web console at `/`: sign-in, a playground, a gallery of the application's tasks, task
//! pages, the account (balance, usage, tokens) and an admin area. Server-rendered HTML with one
//! small hand-written script and style sheet, both embedded in the binary; nothing is fetched
//! from elsewhere at runtime.
//!
//! It calls the same services the API routes do (`accounts`, `tasks`, the image store), never
//! the server over HTTP. The session is the application token itself, in an `HttpOnly`,
//! `SameSite=Strict` cookie (`Secure` when the public base URL is https), checked on every
//! request exactly as an API request's token is (so a revoked token ends its console session at
//! once). Every state-changing form carries a CSRF token derived from the session: an HMAC of a
//! fixed label keyed with the session's secret, which a page of another origin cannot compute.
//! Before sign-in there is no secret yet: the sign-in forms use a random value held both in a
//! cookie and in the form (double submit).
//!
//! Imports `http` for the application state and trace ids, and nothing imports it but `app`.

use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRequestParts},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{
    accounts::{AuthError, Caller},
    api::IMAGES_API_ID,
    http::AppState,
};

mod account;
mod admin;
mod assets;
mod gallery;
mod html;
mod playground;
mod signup;
mod thumbs;

/// What the console needs from configuration.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Cookies get `Secure` (the public base URL is https).
    pub secure_cookies: bool,
    /// The largest form the playground accepts (uploaded images included).
    pub max_body_bytes: usize,
    /// `Some`: self-service sign-up is on and gives a new application this many credits.
    pub signup_credits: Option<i64>,
}

const SESSION_COOKIE: &str = "nb_session";
const ADMIN_COOKIE: &str = "nb_admin";
const PRESIGN_COOKIE: &str = "nb_presign";

/// The console's routes, for `http::router` to serve beside the API.
pub fn routes(settings: ConsoleSettings) -> Router<AppState> {
    let max_body = settings.max_body_bytes;
    Router::new()
        .route("/", get(playground::page))
        .route(
            "/console/sign-in",
            get(playground::sign_in_page).post(playground::sign_in),
        )
        .route("/console/sign-out", post(playground::sign_out))
        .route("/console/sign-up", get(signup::page).post(signup::sign_up))
        .route("/console/generate", post(playground::generate))
        .route("/console/tasks/{id}/state", get(playground::task_state))
        .route("/console/tasks/{id}", get(gallery::task_page))
        .route("/console/gallery", get(gallery::page))
        .route("/console/thumbs/{key}", get(thumbs::get))
        .route("/console/account", get(account::page))
        .route("/console/tokens", post(account::create_token))
        .route("/console/tokens/{id}/revoke", post(account::revoke_token))
        .route("/console/admin", get(admin::page))
        .route("/console/admin/sign-in", post(admin::sign_in))
        .route("/console/admin/sign-out", post(admin::sign_out))
        .route("/console/admin/apps", post(admin::create_app))
        .route("/console/admin/apps/{id}/topup", post(admin::topup))
        .route("/console/admin/apps/{id}/limits", post(admin::limits))
        .route("/console/admin/apps/{id}/disable", post(admin::disable))
        .route("/console/admin/apps/{id}/enable", post(admin::enable))
        .route("/console/assets/{name}", get(assets::get))
        .layer(axum::Extension(std::sync::Arc::new(settings)))
        .layer(DefaultBodyLimit::max(max_body))
}

type Settings = axum::Extension<std::sync::Arc<ConsoleSettings>>;

/// A signed-in application: the caller its token stands for, and the CSRF token its forms carry.
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
}

impl Session {
    /// Whether a form's CSRF token is this session's.
    pub fn csrf_ok(&self, given: &str) -> bool {
        same(&self.csrf, given)
    }
}

/// Why there is no session.
pub enum NoSession {
    /// No cookie: sign in.
    Missing,
    /// A cookie whose token no longer works (revoked, expired, disabled).
    Refused(AuthError),
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        let reason = match self {
            NoSession::Missing => "",
            NoSession::Refused(AuthError::Expired) => "?reason=expired",
            NoSession::Refused(AuthError::Disabled) => "?reason=disabled",
            NoSession::Refused(AuthError::Lookup(_)) => "?reason=unavailable",
            NoSession::Refused(_) => "?reason=invalid",
        };
        Redirect::to(&format!("/console/sign-in{reason}")).into_response()
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, NoSession> {
        let token = cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|value| URL_SAFE_NO_PAD.decode(value).ok())
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(NoSession::Missing)?;
        match state.accounts.authenticate(&token, IMAGES_API_ID).await {
            Ok(caller) => Ok(Session {
                caller,
                csrf: csrf_token(&token, "console"),
            }),
            Err(AuthError::Lookup(e)) => {
                tracing::error!(error = %e, "console session lookup failed");
                Err(NoSession::Refused(AuthError::Lookup(e)))
            }
            Err(e) => Err(NoSession::Refused(e)),
        }
    }
}

/// The CSRF token of a session whose secret is `secret`: hex HMAC-SHA256 of `label`.
fn csrf_token(secret: &str, label: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(b"nano-banana console csrf: ");
    mac.update(label.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal strings, compared in time that does not depend on where they differ; never equal when
/// `expected` is empty.
fn same(expected: &str, given: &str) -> bool {
    !expected.is_empty()
        && expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The value of cookie `name`, if the request has it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// A page shown before there is a session (the sign-in and sign-up forms), rendered with
/// `status` and the pre-session CSRF cookie holding `check`, the value its form carries.
fn presession_page(
    settings: &ConsoleSettings,
    check: &str,
    page: html::Page<'_>,
    status: StatusCode,
) -> Response {
    let mut response = page.render(status);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(settings, PRESIGN_COOKIE, Some(check)),
    );
    response
}

/// A `Set-Cookie` value: always `HttpOnly`, `SameSite=Strict` and `Path=/`; `Secure` over https.
/// `None` for the value clears the cookie.
fn set_cookie(settings: &ConsoleSettings, name: &str, value: Option<&str>) -> HeaderValue {
    let secure = if settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let text = match value {
        Some(value) => {
            format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000{secure}")
        }
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The session cookie's value for `token`.
fn session_value(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(token.as_bytes())
}

/// A fresh random value for the double-submit check of the sign-in forms.
fn presign_value() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether a sign-in form's check value matches its cookie.
fn presign_ok(headers: &HeaderMap, given: &str) -> bool {
    cookie(headers, PRESIGN_COOKIE).is_some_and(|expected| same(expected, given))
}

/// The answer to a form whose CSRF token is missing or wrong.
fn csrf_refused() -> Response {
    html::message_page(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form could not be accepted: it is out of date or came from another site. Go back, \
         reload the page and try again.",
    )
}

/// Whether the request asked for JSON (the console's script does; a plain form post does not).
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 as a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD` as Unix milliseconds at 00:00 UTC; `None` if it is not such a date.
fn day_start_ms(date: &str) -> Option<i64> {
    let mut parts = date.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(1970..=9999).contains(&y) {
        return None;
    }
    // Days from civil (the inverse of `civil_from_days`).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_convert_both_ways() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_757_183_036_787), "2025-09-06 18:23:56 UTC");
        assert_eq!(day_start_ms("2025-09-06"), Some(1_757_116_800_000));
        assert_eq!(day_start_ms("1970-01-01"), Some(0));
        assert_eq!(
            day_start_ms("2024-02-29").map(utc).as_deref(),
            Some("2024-02-29 00:00:00 UTC")
        );
        assert_eq!(day_start_ms("2025-13-01"), None);
        assert_eq!(day_start_ms("yesterday"), None);
    }

    #[test]
    fn csrf_tokens_depend_on_the_secret_and_compare_exactly() {
        let a = csrf_token("nb-one", "console");
        assert_eq!(a.len(), 64);
        assert_ne!(a, csrf_token("nb-two", "console"));
        assert_ne!(a, csrf_token("nb-one", "admin"));
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &a[1..]));
        assert!(!same("", ""));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("nb_session_x=1; nb_session=abc; other=2"),
        );
        assert_eq!(cookie(&headers, "nb_session"), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
    }
}
