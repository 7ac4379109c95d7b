//! Sign-in and sign-out, and the playground: the form that makes a task (a generation, or an edit
//! of uploaded or earlier images), and the task's state for the page's script to poll.

use axum::{
    Extension, Form, Json,
    extract::{Multipart, Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    NoSession, PRESIGN_COOKIE, SESSION_COOKIE, Session, Settings, csrf_refused,
    html::{self, Nav, Notice, Page, esc},
    presign_ok, presign_value, session_value, set_cookie, wants_json,
};
use crate::{
    api::{ApiError, ErrorCode, IMAGES_API_ID},
    dialects::Translated,
    domain::{AspectRatio, ImagesRequest},
    http::{AppState, TraceId, submit},
    storage::ImageStore,
};

#[derive(Deserialize)]
pub struct SignInQuery {
    reason: Option<String>,
}

pub async fn sign_in_page(
    Extension(settings): Settings,
    Query(query): Query<SignInQuery>,
    session: Result<Session, NoSession>,
) -> Response {
    if session.is_ok() {
        return Redirect::to("/").into_response();
    }
    let notice = match query.reason.as_deref() {
        Some("expired") => Some("Your token has expired: sign in with another one."),
        Some("disabled") => Some("This application is disabled: ask an administrator."),
        Some("invalid") => Some("Your session has ended (the token was revoked?): sign in again."),
        Some("unavailable") => Some("The server could not check your token just now: try again."),
        _ => None,
    };
    sign_in_form(&settings, notice.map(|n| Notice::Error(n.to_owned())))
}

/// The sign-in page with a fresh double-submit value (cookie and hidden field).
fn sign_in_form(settings: &super::ConsoleSettings, notice: Option<Notice>) -> Response {
    let check = presign_value();
    let signup = if settings.signup_credits.is_some() {
        "<p class=\"help\">No token yet? <a href=\"/console/sign-up\">Create an application</a>.</p>"
    } else {
        ""
    };
    let body = format!(
        "<form method=\"post\" action=\"/console/sign-in\" class=\"card narrow\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{check}\">\
         <label for=\"token\">Application token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" \
           required spellcheck=\"false\" aria-describedby=\"token-help\">\
         <p id=\"token-help\" class=\"help\">The token your administrator gave you (it starts \
           with <code>nb-</code>). It is kept in a cookie this browser never shows to scripts.</p>\
         <button type=\"submit\">Sign in</button>{signup}</form>"
    );
    super::presession_page(
        settings,
        &check,
        Page {
            title: "Sign in",
            nav: Nav::None,
            csrf: None,
            notice,
            body,
        },
        StatusCode::OK,
    )
}

#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

pub async fn sign_in(
    State(state): State<AppState>,
    Extension(settings): Settings,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    if !presign_ok(&headers, &form.csrf) {
        return csrf_refused();
    }
    let token = form.token.trim();
    let refused = match state.accounts.authenticate(token, IMAGES_API_ID).await {
        Ok(_) => None,
        Err(crate::accounts::AuthError::Lookup(e)) => {
            tracing::error!(error = %e, "console sign-in lookup failed");
            Some("The server could not check the token just now: try again in a moment.")
        }
        Err(crate::accounts::AuthError::Expired) => Some("That token has expired."),
        Err(crate::accounts::AuthError::Disabled) => Some("That token's application is disabled."),
        Err(crate::accounts::AuthError::Mismatched) => {
            Some("That token may not use the images API.")
        }
        Err(crate::accounts::AuthError::Invalid) => {
            Some("That token is not valid: check it and try again.")
        }
    };
    if let Some(message) = refused {
        let mut response = sign_in_form(&settings, Some(Notice::Error(message.into())));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    }
    let mut response = Redirect::to("/").into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(&settings, SESSION_COOKIE, Some(&session_value(token))),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(&settings, PRESIGN_COOKIE, None),
    );
    response
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

pub async fn sign_out(
    Extension(settings): Settings,
    session: Result<Session, NoSession>,
    Form(form): Form<CsrfOnly>,
) -> Response {
    // A session whose token stopped working may still sign out (the cookie is cleared).
    if let Ok(session) = &session
        && !session.csrf_ok(&form.csrf)
    {
        return csrf_refused();
    }
    let mut response = Redirect::to("/console/sign-in").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&settings, SESSION_COOKIE, None),
    );
    response
}

/// What the playground form holds, kept to show again after a refusal.
#[derive(Debug, Default)]
pub struct Fields {
    prompt: String,
    model: String,
    aspect_ratio: String,
    resolution: String,
    count: String,
    /// Stored images to edit (their keys).
    sources: Vec<String>,
    csrf: String,
}

#[derive(Deserialize)]
pub struct PlaygroundQuery {
    source: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<PlaygroundQuery>,
    session: Session,
) -> Response {
    let fields = Fields {
        sources: query.source.into_iter().collect(),
        ..Fields::default()
    };
    playground(&state, &session, &fields, None, StatusCode::OK)
}

fn playground(
    state: &AppState,
    session: &Session,
    fields: &Fields,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let models: Vec<&str> = state
        .tasks
        .offered_models()
        .iter()
        .map(|m| m.name())
        .collect();
    let model = if fields.model.is_empty() {
        models.first().copied().unwrap_or("nano-banana")
    } else {
        &fields.model
    };
    let ratios: Vec<(&str, &str)> = std::iter::once(("", "Automatic"))
        .chain(AspectRatio::ALL.iter().map(|r| (r.as_str(), r.as_str())))
        .collect();
    let resolution = if fields.resolution.is_empty() {
        "1K"
    } else {
        &fields.resolution
    };
    let count = if fields.count.is_empty() {
        "1"
    } else {
        &fields.count
    };
    let sources: String = fields
        .sources
        .iter()
        .map(|key| {
            format!(
                "<li class=\"chip\"><input type=\"hidden\" name=\"source\" value=\"{k}\">\
                 <img src=\"/console/thumbs/{k}\" alt=\"\" width=\"48\" height=\"48\">\
                 <span>Earlier image</span>\
                 <button type=\"button\" class=\"remove\" aria-label=\"Do not edit this image\">×</button></li>",
                k = esc(key)
            )
        })
        .collect();
    let body = format!(
        "<div class=\"playground\">\
         <form id=\"generate\" class=\"card\" method=\"post\" action=\"/console/generate\" \
           enctype=\"multipart/form-data\" data-base=\"{base}\">{csrf}\
         <label for=\"prompt\">Prompt</label>\
         <textarea id=\"prompt\" name=\"prompt\" rows=\"4\" required \
           placeholder=\"A banana-shaped lighthouse at dusk\">{prompt}</textarea>\
         <div class=\"row\">\
         <div><label for=\"model\">Model</label><select id=\"model\" name=\"model\">{models}</select></div>\
         <div><label for=\"aspect_ratio\">Aspect ratio</label>\
           <select id=\"aspect_ratio\" name=\"aspect_ratio\">{ratios}</select></div>\
         <div><label for=\"resolution\">Resolution</label>\
           <select id=\"resolution\" name=\"resolution\">{resolutions}</select></div>\
         <div><label for=\"count\">Images</label>\
           <input id=\"count\" name=\"count\" type=\"number\" min=\"1\" max=\"4\" value=\"{count}\"></div>\
         </div>\
         <fieldset class=\"edit\"><legend>Edit images (optional)</legend>\
         <ul id=\"sources\" class=\"chips\">{sources}</ul>\
         <div id=\"drop\" class=\"drop\">\
         <label for=\"images\">Drop images here, or choose files</label>\
         <input id=\"images\" name=\"images\" type=\"file\" accept=\"image/png,image/jpeg,image/webp,image/gif\" multiple>\
         <p class=\"help\" id=\"picked\" aria-live=\"polite\"></p></div></fieldset>\
         <button type=\"submit\" id=\"submit\">Generate</button>\
         </form>\
         <section class=\"card\" aria-labelledby=\"result-title\">\
         <h2 id=\"result-title\">Result</h2>\
         <div id=\"status\" role=\"status\" aria-live=\"polite\" class=\"status\">Nothing yet: \
           write a prompt and press Generate.</div>\
         <div id=\"results\" class=\"results\"></div></section>\
         <section class=\"card code\" aria-labelledby=\"code-title\">\
         <h2 id=\"code-title\">The same request from code</h2>\
         <p class=\"help\">Replace <code>$NANO_BANANA_TOKEN</code> with your token \
           (the console never shows it).</p>\
         <h3 id=\"curl-title\">curl</h3><pre><code id=\"curl\" aria-labelledby=\"curl-title\"></code></pre>\
         <button type=\"button\" class=\"secondary\" data-copy=\"curl\">Copy curl</button>\
         <h3 id=\"python-title\">Python</h3><pre><code id=\"python\" aria-labelledby=\"python-title\"></code></pre>\
         <button type=\"button\" class=\"secondary\" data-copy=\"python\">Copy Python</button>\
         <noscript><p>The snippets need JavaScript.</p></noscript>\
         </section></div>",
        csrf = html::csrf_field(&session.csrf),
        base = esc(state.tasks.public_base_url()),
        prompt = esc(&fields.prompt),
        models = html::options(models.iter().map(|m| (*m, *m)), model),
        ratios = html::options(ratios, &fields.aspect_ratio),
        resolutions = html::options([("1K", "1K"), ("2K", "2K"), ("4K", "4K")], resolution),
        count = esc(count),
    );
    Page {
        title: "Playground",
        nav: Nav::Playground,
        csrf: Some(&session.csrf),
        notice,
        body,
    }
    .render(status)
}

/// Why a playground form was refused, for a person.
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }

    fn from_api(error: &ApiError) -> Refusal {
        let status = StatusCode::from_u16(error.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match error.code {
            ErrorCode::UsedUp => format!("Not enough credits. {}", error.message),
            ErrorCode::TooManyRequests => format!("Slow down a little. {}", error.message),
            ErrorCode::ApiError => "Something went wrong on the server; your request was not \
                                    made. Try again in a moment."
                .to_owned(),
            _ => error.message.clone(),
        };
        Refusal { status, message }
    }
}

pub async fn generate(
    State(state): State<AppState>,
    Extension(TraceId(trace_id)): Extension<TraceId>,
    headers: HeaderMap,
    session: Session,
    multipart: Multipart,
) -> Response {
    let json = wants_json(&headers);
    let mut fields = Fields::default();
    let result = make_task(&state, &trace_id, &session, multipart, &mut fields).await;
    match result {
        Ok(task_id) if json => Json(json!({
            "task_id": task_id,
            "task_url": format!("/console/tasks/{task_id}"),
            "state_url": format!("/console/tasks/{task_id}/state"),
        }))
        .into_response(),
        Ok(task_id) => Redirect::to(&format!("/console/tasks/{task_id}")).into_response(),
        Err(refusal) if refusal.status == StatusCode::FORBIDDEN && fields.csrf != session.csrf => {
            csrf_refused()
        }
        Err(refusal) if json => {
            (refusal.status, Json(json!({"error": refusal.message}))).into_response()
        }
        Err(refusal) => playground(
            &state,
            &session,
            &fields,
            Some(Notice::Error(refusal.message)),
            refusal.status,
        ),
    }
}

/// Reads the form into `fields` (kept for showing again) and submits the task.
async fn make_task(
    state: &AppState,
    trace_id: &str,
    session: &Session,
    mut multipart: Multipart,
    fields: &mut Fields,
) -> Result<String, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The form is too large: use fewer or smaller images.",
        )
    };
    let mut images = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
            Err(_) => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "The form could not be read: try again.",
                ));
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "images" {
            let content_type = field.content_type().unwrap_or_default().to_owned();
            let bytes = field.bytes().await.map_err(|_| too_large())?;
            if bytes.is_empty() {
                continue;
            }
            if bytes.len() > state.max_image_bytes {
                return Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "An image is too large: at most {} MB each.",
                        state.max_image_bytes / 1_000_000
                    ),
                ));
            }
            let mime = if content_type.starts_with("image/") {
                content_type
            } else {
                "image/png".to_owned()
            };
            images.push(format!("data:{mime};base64,{}", STANDARD.encode(&bytes)));
            continue;
        }
        let text = field.text().await.map_err(|_| too_large())?;
        match name.as_str() {
            "csrf" => fields.csrf = text,
            "prompt" => fields.prompt = text,
            "model" => fields.model = text,
            "aspect_ratio" => fields.aspect_ratio = text,
            "resolution" => fields.resolution = text,
            "count" => fields.count = text,
            "source" if !text.trim().is_empty() => fields.sources.push(text.trim().to_owned()),
            _ => {}
        }
    }
    if !session.csrf_ok(&fields.csrf) {
        return Err(Refusal::new(StatusCode::FORBIDDEN, "The form expired."));
    }
    for key in &fields.sources {
        let (bytes, mime) = state.images.read(key).await.map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "An image chosen for editing is no longer available: remove it and try again.",
            )
        })?;
        images.push(format!("data:{mime};base64,{}", STANDARD.encode(&bytes)));
    }
    let count: u8 = match fields.count.trim() {
        "" => 1,
        text => text.parse().map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "Images must be a whole number from 1 to 4.",
            )
        })?,
    };
    let mut body = json!({
        "prompt": fields.prompt,
        "count": count,
        "async": true,
    });
    for (key, value) in [
        ("model", &fields.model),
        ("aspect_ratio", &fields.aspect_ratio),
        ("resolution", &fields.resolution),
    ] {
        if !value.trim().is_empty() {
            body[key] = Value::String(value.trim().to_owned());
        }
    }
    if !images.is_empty() {
        body["action"] = json!("edit");
        body["image_urls"] = json!(images);
    }
    let request = ImagesRequest::parse(&body, &state.limits)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, capitalize(&e.0)))?;
    submit::rate_limit(state, &session.caller)
        .await
        .map_err(|e| Refusal::from_api(&e))?;
    let mut translated = Translated { body, request };
    let submitted = submit::submit(
        state,
        trace_id,
        &session.caller,
        &HeaderMap::new(),
        &mut translated,
    )
    .await
    .map_err(|e| Refusal::from_api(&e))?;
    Ok(submitted.task_id)
}

/// `text` with its first letter in upper case (the domain's messages start in lower case).
pub(super) fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A finished task's images (URL, and the stored key when it is one of ours) and its error
/// message, from its stored response.
pub fn outcome(response: Option<&str>) -> (Vec<(String, Option<String>)>, Option<String>) {
    let Some(response) = response.and_then(|r| serde_json::from_str::<Value>(r).ok()) else {
        return (Vec::new(), None);
    };
    let images = response["data"]
        .as_array()
        .map(|data| {
            data.iter()
                .filter_map(|entry| entry["image_url"].as_str())
                .map(|url| (url.to_owned(), ImageStore::key_in_url(url)))
                .collect()
        })
        .unwrap_or_default();
    let error = response
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_owned);
    (images, error)
}

/// `GET /console/tasks/{id}/state`: what the playground's script polls.
pub async fn task_state(
    State(state): State<AppState>,
    Path(id): Path<String>,
    session: Session,
) -> Response {
    match state
        .tasks
        .summary(&session.caller.application_id, &id)
        .await
    {
        Ok(Some(task)) => {
            let (images, error) = outcome(task.response.as_deref());
            let done = matches!(task.state.as_str(), "succeeded" | "failed");
            let images: Vec<Value> = images
                .into_iter()
                .map(|(url, key)| json!({"url": url, "key": key}))
                .collect();
            Json(json!({
                "id": task.id,
                "state": task.state,
                "done": done,
                "images": images,
                "error": error,
                "charged": task.charged,
                "task_url": format!("/console/tasks/{}", task.id),
            }))
            .into_response()
        }
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "No such task in this application."})),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console task state failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "The task's state could not be read just now; retrying."})),
            )
                .into_response()
        }
    }
}
