//! Self-service sign-up (`--signup-credits N`, off by default): a new application with `N`
//! credits and its first token, shown once, and a session signed in with it. Limited per client
//! address (the TCP peer) through the same rate limiter as the API, so several nodes with Redis
//! share the count.

use axum::{
    Extension, Form,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::Response,
};
use serde::Deserialize;

use super::{
    ConsoleSettings, PRESIGN_COOKIE, SESSION_COOKIE, Settings, csrf_refused,
    html::{self, Nav, Notice, Page, esc},
    presign_ok, presign_value, session_value, set_cookie,
};
use crate::{
    accounts::{AdminRequest, Limits, NewApplication, NewToken},
    http::{AppState, PeerAddr},
    limits::Verdict,
};

/// Sign-ups allowed per client address: this many at once, then one a minute.
const PER_ADDRESS_BURST: u64 = 2;
const PER_ADDRESS_PER_MINUTE: u64 = 1;

fn off() -> Response {
    html::message_page(
        StatusCode::NOT_FOUND,
        "No sign-up here",
        "This server does not offer sign-up: ask its administrator for a token.",
    )
}

pub async fn page(Extension(settings): Settings) -> Response {
    if settings.signup_credits.is_none() {
        return off();
    }
    form(&settings, "", None, StatusCode::OK)
}

fn form(
    settings: &ConsoleSettings,
    name: &str,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let check = presign_value();
    let credits = settings.signup_credits.unwrap_or(0);
    let body = format!(
        "<form method=\"post\" action=\"/console/sign-up\" class=\"card narrow\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{check}\">\
         <p>A new application starts with {credits} credits and one token.</p>\
         <label for=\"app-name\">Application name</label>\
         <input id=\"app-name\" name=\"name\" required maxlength=\"100\" value=\"{name}\" autocomplete=\"organization\">\
         <button type=\"submit\">Create my application</button>\
         <p class=\"help\">Already have a token? <a href=\"/console/sign-in\">Sign in</a>.</p></form>",
        name = esc(name),
    );
    super::presession_page(
        settings,
        &check,
        Page {
            title: "Sign up",
            nav: Nav::None,
            csrf: None,
            notice,
            body,
        },
        status,
    )
}

#[derive(Deserialize)]
pub struct SignUp {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

pub async fn sign_up(
    State(state): State<AppState>,
    Extension(settings): Settings,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    Form(signup): Form<SignUp>,
) -> Response {
    let Some(credits) = settings.signup_credits else {
        return off();
    };
    if !presign_ok(&headers, &signup.csrf) {
        return csrf_refused();
    }
    let name = signup.name.trim().chars().take(100).collect::<String>();
    if name.is_empty() {
        let notice = Notice::Error("Give your application a name.".into());
        return form(&settings, &name, Some(notice), StatusCode::BAD_REQUEST);
    }
    let address = peer
        .map(|Extension(PeerAddr(addr))| addr.ip().to_string())
        .unwrap_or_default();
    let verdict = state
        .rate_limiter
        .admit(
            &format!("console-signup:{address}"),
            PER_ADDRESS_PER_MINUTE,
            PER_ADDRESS_BURST,
        )
        .await;
    let refusal = match verdict {
        Verdict::Checked(decision) if !decision.allowed => Some(format!(
            "Too many sign-ups from your address: try again in {} seconds.",
            decision.throttle().retry_after()
        )),
        Verdict::Unavailable => Some("Sign-up is unavailable just now: try again shortly.".into()),
        _ => None,
    };
    if let Some(message) = refusal {
        return form(
            &settings,
            &name,
            Some(Notice::Error(message)),
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let create = AdminRequest::CreateApplication(NewApplication {
        name: name.clone(),
        credits,
        limits: Limits::default(),
    });
    let made = match state.accounts.administer(&create).await {
        Ok(app) => {
            let token = AdminRequest::CreateToken(NewToken {
                application_id: app["id"].as_str().unwrap_or_default().to_owned(),
                name: "sign-up".into(),
                ..NewToken::default()
            });
            state.accounts.administer(&token).await
        }
        Err(e) => Err(e),
    };
    let token = match made {
        Ok(made) => made["token"].as_str().unwrap_or_default().to_owned(),
        Err(e) => {
            tracing::error!(error = %e, "console sign-up failed");
            let notice = Notice::Error(
                "Your application could not be created just now: try again in a moment.".into(),
            );
            return form(
                &settings,
                &name,
                Some(notice),
                StatusCode::INTERNAL_SERVER_ERROR,
            );
        }
    };
    let body = format!(
        "<div class=\"notice done\" role=\"status\" id=\"new-token\">\
         <p>Application <strong>{name}</strong> is ready with {credits} credits. This is its \
         token — copy it now: it is shown only this once.</p>\
         <pre><code id=\"token-value\">{token}</code></pre>\
         <button type=\"button\" class=\"secondary\" data-copy=\"token-value\">Copy token</button></div>\
         <p>You are signed in with it. <a class=\"button\" href=\"/\">Go to the playground</a></p>",
        name = esc(&name),
        token = esc(&token),
    );
    let mut response = Page {
        title: "Welcome",
        nav: Nav::None,
        csrf: None,
        notice: None,
        body,
    }
    .render(StatusCode::OK);
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(&settings, SESSION_COOKIE, Some(&session_value(&token))),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(&settings, PRESIGN_COOKIE, None),
    );
    response
}
