//! The admin area: sign-in with the admin key (kept like a session token, in its own `HttpOnly`
//! cookie), applications (create, top up, limits, disable/enable), usage across applications
//! and the upstream routes' health. Every change goes through `Accounts::administer`, as the
//! admin API and the CLI do.

use axum::{
    Extension, Form,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;

use super::{
    ADMIN_COOKIE, PRESIGN_COOKIE, Settings,
    account::usage_chart,
    cookie, csrf_refused, csrf_token,
    html::{self, Nav, Notice, Page, esc},
    playground::capitalize,
    presign_ok, presign_value, same, set_cookie,
};
use crate::{
    accounts::{AdminError, AdminRequest, Limits, NewApplication},
    http::AppState,
};

/// Where a request to the admin area stands.
enum Gate {
    /// No admin key is configured: the admin area does not exist.
    Off,
    /// Not signed in (or with a key that is no longer the admin key).
    SignIn,
    /// Signed in; the CSRF token of the admin session.
    Admin(String),
}

fn gate(state: &AppState, headers: &HeaderMap) -> Gate {
    let Some(expected) = &state.admin_key else {
        return Gate::Off;
    };
    let key = cookie(headers, ADMIN_COOKIE)
        .and_then(|value| URL_SAFE_NO_PAD.decode(value).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    match key {
        Some(key) if expected.matches(&key) => Gate::Admin(csrf_token(&key, "admin")),
        _ => Gate::SignIn,
    }
}

fn off() -> Response {
    html::message_page(
        StatusCode::NOT_FOUND,
        "Admin area off",
        "This server has no admin key, so it has no admin area. Start it with --admin-key \
         (or NANO_BANANA_ADMIN_KEY) to turn it on.",
    )
}

#[derive(Deserialize)]
pub struct AdminQuery {
    done: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    Extension(settings): Settings,
    Query(query): Query<AdminQuery>,
    headers: HeaderMap,
) -> Response {
    let notice = query.done.as_deref().map(|done| {
        Notice::Done(
            match done {
                "created" => "The application was created.",
                "topup" => "The credits were added.",
                "limits" => "The limits were saved.",
                "disabled" => "The application was disabled.",
                "enabled" => "The application was enabled.",
                _ => "Done.",
            }
            .to_owned(),
        )
    });
    match gate(&state, &headers) {
        Gate::Off => off(),
        Gate::SignIn => sign_in_form(&settings, None, StatusCode::OK),
        Gate::Admin(csrf) => admin_page(&state, &csrf, notice, StatusCode::OK).await,
    }
}

fn sign_in_form(
    settings: &super::ConsoleSettings,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let check = presign_value();
    let body = format!(
        "<form method=\"post\" action=\"/console/admin/sign-in\" class=\"card narrow\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{check}\">\
         <label for=\"admin-key\">Admin key</label>\
         <input id=\"admin-key\" name=\"key\" type=\"password\" required autocomplete=\"current-password\" spellcheck=\"false\">\
         <button type=\"submit\">Sign in as administrator</button></form>"
    );
    super::presession_page(
        settings,
        &check,
        Page {
            title: "Admin",
            nav: Nav::Admin,
            csrf: None,
            notice,
            body,
        },
        status,
    )
}

async fn admin_page(
    state: &AppState,
    csrf: &str,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let (apps, usage) = match (
        state.accounts.applications().await,
        state.accounts.usage(None).await,
    ) {
        (Ok(apps), Ok(usage)) => (apps, usage),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "console admin page failed");
            return html::message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Admin area unavailable",
                "The applications could not be read just now. Try again in a moment.",
            );
        }
    };
    let field = html::csrf_field(csrf);
    let number = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let rows: String = apps
        .iter()
        .map(|app| {
            let id = esc(&app.id);
            let name = esc(&app.name);
            let toggle = if app.disabled {
                format!("<form method=\"post\" action=\"/console/admin/apps/{id}/enable\">{field}<button type=\"submit\" class=\"secondary\">Enable {name}</button></form>")
            } else {
                format!("<form method=\"post\" action=\"/console/admin/apps/{id}/disable\">{field}<button type=\"submit\" class=\"danger\">Disable {name}</button></form>")
            };
            format!(
                "<article class=\"card app\" aria-labelledby=\"app-{id}\">\
                 <h3 id=\"app-{id}\">{name}{off}</h3>\
                 <p><code>{id}</code> · <span class=\"credits\" data-app=\"{id}\">{credits}</span> credits · created {created}</p>\
                 <div class=\"row\">\
                 <form method=\"post\" action=\"/console/admin/apps/{id}/topup\" class=\"inline\">{field}\
                   <label for=\"topup-{id}\">Credits to add</label>\
                   <input id=\"topup-{id}\" name=\"credits\" type=\"number\" min=\"1\" required>\
                   <button type=\"submit\">Top up</button></form>\
                 <form method=\"post\" action=\"/console/admin/apps/{id}/limits\" class=\"inline\">{field}\
                   <label for=\"rate-{id}\">Per minute</label><input id=\"rate-{id}\" name=\"rate_per_minute\" type=\"number\" min=\"1\" value=\"{rate}\">\
                   <label for=\"burst-{id}\">Burst</label><input id=\"burst-{id}\" name=\"burst\" type=\"number\" min=\"1\" value=\"{burst}\">\
                   <label for=\"conc-{id}\">At once</label><input id=\"conc-{id}\" name=\"max_concurrent\" type=\"number\" min=\"1\" value=\"{conc}\">\
                   <label for=\"keep-{id}\">Keep tasks (s, 0 forever)</label><input id=\"keep-{id}\" name=\"retention_seconds\" type=\"number\" min=\"0\" value=\"{keep}\" placeholder=\"server default\">\
                   <button type=\"submit\" class=\"secondary\">Save limits</button></form>\
                 {toggle}</div></article>",
                off = if app.disabled { " <span class=\"badge failed\">disabled</span>" } else { "" },
                credits = app.credits,
                created = super::utc(app.created_at),
                rate = number(app.rate_per_minute),
                burst = number(app.burst),
                conc = number(app.max_concurrent),
                keep = number(app.retention_seconds),
            )
        })
        .collect();
    let routes: String = state
        .tasks
        .route_status()
        .into_iter()
        .flat_map(|(model, routes)| {
            routes.into_iter().map(move |r| {
                let errors = r
                    .recent_errors
                    .last()
                    .map(|e| esc(&e.error))
                    .unwrap_or_default();
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><span class=\"badge {}\">{}</span></td>\
                     <td>{}</td><td>{}</td><td>{}</td></tr>",
                    model.name(),
                    esc(&r.provider),
                    r.kind,
                    esc(&r.upstream_model),
                    if r.state == "healthy" { "succeeded" } else { "failed" },
                    r.state,
                    r.calls,
                    r.failures,
                    errors
                )
            })
        })
        .collect();
    let body = format!(
        "<form method=\"post\" action=\"/console/admin/sign-out\" class=\"right\">{field}\
           <button type=\"submit\" class=\"secondary\">Leave the admin area</button></form>\
         <section aria-labelledby=\"apps\"><h2 id=\"apps\">Applications</h2>{rows}\
         <form method=\"post\" action=\"/console/admin/apps\" class=\"card inline\">{field}\
           <label for=\"new-name\">New application's name</label><input id=\"new-name\" name=\"name\" required maxlength=\"100\">\
           <label for=\"new-credits\">Opening credits</label><input id=\"new-credits\" name=\"credits\" type=\"number\" min=\"0\" value=\"0\">\
           <button type=\"submit\">Create application</button></form></section>\
         <section class=\"card\" aria-labelledby=\"all-usage\"><h2 id=\"all-usage\">Usage across applications</h2>{usage}</section>\
         <section class=\"card\" aria-labelledby=\"routes\"><h2 id=\"routes\">Upstream routes (this node)</h2>\
         <div class=\"scroll\"><table><thead><tr><th scope=\"col\">Model</th><th scope=\"col\">Provider</th>\
         <th scope=\"col\">Kind</th><th scope=\"col\">Upstream model</th><th scope=\"col\">State</th>\
         <th scope=\"col\">Calls</th><th scope=\"col\">Failures</th><th scope=\"col\">Last error</th></tr></thead>\
         <tbody>{routes}</tbody></table></div></section>",
        usage = usage_chart(&usage, true),
    );
    Page {
        title: "Admin",
        nav: Nav::Admin,
        csrf: None,
        notice,
        body,
    }
    .render(status)
}

#[derive(Deserialize)]
pub struct AdminSignIn {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
}

pub async fn sign_in(
    State(state): State<AppState>,
    Extension(settings): Settings,
    headers: HeaderMap,
    Form(form): Form<AdminSignIn>,
) -> Response {
    let Some(expected) = &state.admin_key else {
        return off();
    };
    if !presign_ok(&headers, &form.csrf) {
        return csrf_refused();
    }
    if !expected.matches(form.key.trim()) {
        let notice = Notice::Error("That is not the admin key.".into());
        return sign_in_form(&settings, Some(notice), StatusCode::UNAUTHORIZED);
    }
    let mut response = Redirect::to("/console/admin").into_response();
    let value = URL_SAFE_NO_PAD.encode(form.key.trim().as_bytes());
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&settings, ADMIN_COOKIE, Some(&value)),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&settings, PRESIGN_COOKIE, None),
    );
    response
}

/// Checks the admin session and the form's CSRF token, then runs `request` and redirects back
/// with `done`; a refused request shows the admin page with the reason.
async fn change(
    state: &AppState,
    headers: &HeaderMap,
    csrf: &str,
    request: Result<AdminRequest, String>,
    done: &str,
) -> Response {
    let expected = match gate(state, headers) {
        Gate::Off => return off(),
        Gate::SignIn => return Redirect::to("/console/admin").into_response(),
        Gate::Admin(expected) => expected,
    };
    if !same(&expected, csrf) {
        return csrf_refused();
    }
    let outcome = match request {
        Ok(request) => state
            .accounts
            .administer(&request)
            .await
            .map_err(|e| match e {
                AdminError::NotFound(m) | AdminError::Invalid(m) => (StatusCode::BAD_REQUEST, m),
                AdminError::Db(e) => {
                    tracing::error!(error = %e, "console admin change failed");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "The change could not be saved just now. Try again.".to_owned(),
                    )
                }
            }),
        Err(message) => Err((StatusCode::BAD_REQUEST, message)),
    };
    match outcome {
        Ok(_) => Redirect::to(&format!("/console/admin?done={done}")).into_response(),
        Err((status, message)) => {
            let message = format!("Not done: {}", capitalize(&message));
            admin_page(state, &expected, Some(Notice::Error(message)), status).await
        }
    }
}

/// An optional whole number from a form field (empty: none).
fn optional_number(text: &str, name: &str) -> Result<Option<i64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{name} must be a whole number."))
}

#[derive(Deserialize)]
pub struct CreateApp {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    credits: String,
}

pub async fn create_app(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CreateApp>,
) -> Response {
    let request = optional_number(&form.credits, "Opening credits").map(|credits| {
        AdminRequest::CreateApplication(NewApplication {
            name: form.name.clone(),
            credits: credits.unwrap_or(0),
            limits: Limits::default(),
        })
    });
    change(&state, &headers, &form.csrf, request, "created").await
}

#[derive(Deserialize)]
pub struct Topup {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    credits: String,
}

pub async fn topup(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Topup>,
) -> Response {
    let request = match optional_number(&form.credits, "Credits") {
        Ok(Some(credits)) => Ok(AdminRequest::TopUp { id, credits }),
        Ok(None) => Err("credits to add are required.".to_owned()),
        Err(e) => Err(e),
    };
    change(&state, &headers, &form.csrf, request, "topup").await
}

#[derive(Deserialize)]
pub struct LimitsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rate_per_minute: String,
    #[serde(default)]
    burst: String,
    #[serde(default)]
    max_concurrent: String,
    #[serde(default)]
    retention_seconds: String,
}

pub async fn limits(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<LimitsForm>,
) -> Response {
    let request = (|| {
        Ok(AdminRequest::SetLimits {
            id,
            limits: Limits {
                rate_per_minute: optional_number(&form.rate_per_minute, "Per minute")?,
                burst: optional_number(&form.burst, "Burst")?,
                max_concurrent: optional_number(&form.max_concurrent, "At once")?,
                retention_seconds: optional_number(&form.retention_seconds, "Keep tasks")?,
            },
        })
    })();
    change(&state, &headers, &form.csrf, request, "limits").await
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn disable(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let request = Ok(AdminRequest::SetDisabled { id, disabled: true });
    change(&state, &headers, &form.csrf, request, "disabled").await
}

pub async fn enable(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let request = Ok(AdminRequest::SetDisabled {
        id,
        disabled: false,
    });
    change(&state, &headers, &form.csrf, request, "enabled").await
}

pub async fn sign_out(
    State(state): State<AppState>,
    Extension(settings): Settings,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Gate::Admin(expected) = gate(&state, &headers)
        && !same(&expected, &form.csrf)
    {
        return csrf_refused();
    }
    let mut response = Redirect::to("/console/admin").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&settings, ADMIN_COOKIE, None),
    );
    response
}
