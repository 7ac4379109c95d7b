//! The account page: balance, limits, usage per day and model (a chart and the same numbers as
//! a table), and the application's tokens (create — shown once —, revoke).

use axum::{
    Form,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    Session, csrf_refused,
    html::{self, Nav, Notice, Page, esc},
    playground::CsrfOnly,
    utc,
};
use crate::{
    accounts::{AdminRequest, NewToken},
    http::AppState,
    storage::db::UsageRow,
};

#[derive(Deserialize)]
pub struct AccountQuery {
    done: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<AccountQuery>,
    session: Session,
) -> Response {
    let notice = match query.done.as_deref() {
        Some("revoked") => Some(Notice::Done("The token was revoked.".into())),
        _ => None,
    };
    account(&state, &session, notice, None).await
}

async fn account(
    state: &AppState,
    session: &Session,
    notice: Option<Notice>,
    new_token: Option<(&str, &str)>,
) -> Response {
    let app_id = &session.caller.application_id;
    let (app, tokens, usage) = match (
        state.accounts.application(app_id).await,
        state.accounts.tokens_of(app_id).await,
        state.accounts.usage(Some(app_id)).await,
    ) {
        (Ok(Some(app)), Ok(tokens), Ok(usage)) => (app, tokens, usage),
        (Ok(None), ..) => {
            return html::message_page(
                StatusCode::NOT_FOUND,
                "No application",
                "This session's application no longer exists.",
            );
        }
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            tracing::error!(error = %e, "console account page failed");
            return html::message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Account unavailable",
                "The account could not be read just now. Try again in a moment.",
            );
        }
    };
    let limit = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "none".into());
    let shown_once = new_token
        .map(|(name, token)| {
            format!(
                "<div class=\"notice done\" role=\"status\" id=\"new-token\">\
                 <p>New token <strong>{}</strong> — copy it now: it is shown only this once.</p>\
                 <pre><code id=\"token-value\">{}</code></pre>\
                 <button type=\"button\" class=\"secondary\" data-copy=\"token-value\">Copy token</button></div>",
                esc(name),
                esc(token)
            )
        })
        .unwrap_or_default();
    let rows: String = tokens
        .iter()
        .rev()
        .map(|t| {
            let current = t.id == session.caller.token_id;
            let action = if t.revoked {
                "Revoked".to_owned()
            } else {
                format!(
                    "<form method=\"post\" action=\"/console/tokens/{id}/revoke\">{csrf}\
                     <button type=\"submit\" class=\"danger\" aria-label=\"Revoke token {prefix}…{name}\">Revoke</button></form>",
                    id = esc(&t.id),
                    csrf = html::csrf_field(&session.csrf),
                    prefix = esc(&t.prefix),
                    name = if t.name.is_empty() { String::new() } else { format!(" ({})", esc(&t.name)) },
                )
            };
            format!(
                "<tr><td><code>{}…</code>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&t.prefix),
                if current { " <span class=\"badge\">this session</span>" } else { "" },
                esc(&t.name),
                utc(t.created_at),
                action
            )
        })
        .collect();
    let body = format!(
        "{shown_once}<div class=\"grid2\">\
         <section class=\"card\" aria-labelledby=\"balance\"><h2 id=\"balance\">Balance</h2>\
         <p class=\"big\"><span id=\"credits\">{credits}</span> credits</p>\
         <p>Application <strong>{name}</strong>{disabled}</p></section>\
         <section class=\"card\" aria-labelledby=\"limits\"><h2 id=\"limits\">Limits</h2><dl class=\"facts\">\
         <dt>Requests per minute</dt><dd>{rate}</dd><dt>Burst</dt><dd>{burst}</dd>\
         <dt>Unfinished tasks at once</dt><dd>{concurrent}</dd>\
         <dt>Finished tasks and images kept</dt><dd>{kept}</dd></dl></section></div>\
         <section class=\"card\" aria-labelledby=\"usage\"><h2 id=\"usage\">Usage</h2>{usage}</section>\
         <section class=\"card\" aria-labelledby=\"tokens\"><h2 id=\"tokens\">Tokens</h2>\
         <div class=\"scroll\"><table><thead><tr><th scope=\"col\">Token</th><th scope=\"col\">Name</th>\
         <th scope=\"col\">Created</th><th scope=\"col\">State</th></tr></thead><tbody>{rows}</tbody></table></div>\
         <form method=\"post\" action=\"/console/tokens\" class=\"inline\">{csrf}\
         <label for=\"token-name\">New token's name</label>\
         <input id=\"token-name\" name=\"name\" maxlength=\"100\" placeholder=\"laptop\">\
         <button type=\"submit\">Create token</button></form></section>",
        credits = app.credits,
        name = esc(&app.name),
        disabled = if app.disabled { " (disabled)" } else { "" },
        rate = limit(app.rate_per_minute),
        burst = limit(app.burst),
        concurrent = limit(app.max_concurrent),
        kept = match state.tasks.retention_of(app.retention_seconds) {
            Some(kept) => format!("{} s", kept.as_secs()),
            None => "forever".to_owned(),
        },
        usage = usage_chart(&usage, false),
        csrf = html::csrf_field(&session.csrf),
    );
    Page {
        title: "Account",
        nav: Nav::Account,
        csrf: Some(&session.csrf),
        notice,
        body,
    }
    .render(StatusCode::OK)
}

/// Usage per day and model: a bar chart of images (SVG, no script) and the same as a table.
/// `by_application`: the table names the application too (the admin area).
pub fn usage_chart(rows: &[UsageRow], by_application: bool) -> String {
    if rows.is_empty() {
        return "<p>No usage yet.</p>".to_owned();
    }
    let mut days: Vec<&str> = rows.iter().map(|r| r.day.as_str()).collect();
    days.sort_unstable();
    days.dedup();
    let days: Vec<&str> = days.iter().rev().take(14).rev().copied().collect();
    let mut models: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    const COLOURS: [&str; 6] = [
        "#1d4ed8", "#b45309", "#047857", "#7c3aed", "#be123c", "#0e7490",
    ];
    let colour = |model: &str| {
        let i = models.iter().position(|m| *m == model).unwrap_or(0);
        COLOURS[i % COLOURS.len()]
    };
    let total = |day: &str, model: &str| -> i64 {
        rows.iter()
            .filter(|r| r.day == day && r.model == model)
            .map(|r| r.images)
            .sum()
    };
    let max = days
        .iter()
        .map(|d| models.iter().map(|m| total(d, m)).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (bar, gap, height) = (28i64, 12i64, 120i64);
    // At least 240 units wide: a chart of one or two days stays a chart, not a tall bar.
    let width = (days.len() as i64 * (bar + gap) + gap).max(240);
    let mut svg = format!(
        "<svg class=\"chart\" width=\"{}\" viewBox=\"0 0 {width} {}\" role=\"img\" aria-labelledby=\"chart-title\">\
         <title id=\"chart-title\">Images made per day and model, most {max} in a day</title>",
        width * 2,
        height + 30
    );
    for (i, day) in days.iter().enumerate() {
        let x = gap + i as i64 * (bar + gap);
        let mut y = height;
        for model in &models {
            let n = total(day, model);
            if n == 0 {
                continue;
            }
            let h = (n * height / max).max(2);
            y -= h;
            svg.push_str(&format!(
                "<rect x=\"{x}\" y=\"{y}\" width=\"{bar}\" height=\"{h}\" fill=\"{}\"><title>{} {}: {n} images</title></rect>",
                colour(model),
                esc(day),
                esc(model)
            ));
        }
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"9\" text-anchor=\"middle\" fill=\"#334155\">{}</text>",
            x + bar / 2,
            height + 14,
            esc(day.get(5..).unwrap_or(day))
        ));
    }
    svg.push_str("</svg>");
    let legend: String = models
        .iter()
        .map(|m| {
            format!(
                "<li><svg width=\"12\" height=\"12\" aria-hidden=\"true\"><rect width=\"12\" height=\"12\" fill=\"{}\"/></svg> {}</li>",
                colour(m),
                esc(m)
            )
        })
        .collect();
    let mut sorted: Vec<&UsageRow> = rows.iter().collect();
    sorted.sort_by(|a, b| b.day.cmp(&a.day).then(a.model.cmp(&b.model)));
    let app_head = if by_application {
        "<th scope=\"col\">Application</th>"
    } else {
        ""
    };
    let table: String = sorted
        .iter()
        .take(200)
        .map(|r| {
            let app = if by_application {
                format!("<td><code>{}</code></td>", esc(&r.application_id))
            } else {
                String::new()
            };
            format!(
                "<tr><td>{}</td>{app}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.day),
                esc(&r.model),
                r.tasks,
                r.images,
                r.credits,
                r.failed_tasks
            )
        })
        .collect();
    format!(
        "{svg}<ul class=\"legend\">{legend}</ul>\
         <details><summary>Usage as a table</summary><div class=\"scroll\"><table><thead><tr>\
         <th scope=\"col\">Day (UTC)</th>{app_head}<th scope=\"col\">Model</th><th scope=\"col\">Tasks</th>\
         <th scope=\"col\">Images</th><th scope=\"col\">Credits</th><th scope=\"col\">Failed tasks</th>\
         </tr></thead><tbody>{table}</tbody></table></div></details>"
    )
}

#[derive(Deserialize)]
pub struct NewTokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

pub async fn create_token(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<NewTokenForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    let name = form.name.trim().chars().take(100).collect::<String>();
    let request = AdminRequest::CreateToken(NewToken {
        application_id: session.caller.application_id.clone(),
        name: name.clone(),
        ..NewToken::default()
    });
    match state.accounts.administer(&request).await {
        Ok(created) => {
            let token = created["token"].as_str().unwrap_or_default().to_owned();
            let label = if name.is_empty() { "(unnamed)" } else { &name };
            account(&state, &session, None, Some((label, &token))).await
        }
        Err(e) => {
            tracing::error!(error = %e, "console token creation failed");
            let notice =
                Notice::Error("The token could not be created just now. Try again.".into());
            let mut response = account(&state, &session, Some(notice), None).await;
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    session: Session,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return csrf_refused();
    }
    match state
        .accounts
        .revoke_token_of(&session.caller.application_id, &id)
        .await
    {
        // The session's own token: the session ends with it.
        Ok(true) if id == session.caller.token_id => {
            Redirect::to("/console/sign-in?reason=invalid").into_response()
        }
        Ok(true) => Redirect::to("/console/account?done=revoked").into_response(),
        Ok(false) => html::message_page(
            StatusCode::NOT_FOUND,
            "No such token",
            "This application has no token with that id.",
        ),
        Err(e) => {
            tracing::error!(error = %e, "console token revocation failed");
            let notice =
                Notice::Error("The token could not be revoked just now. Try again.".into());
            let mut response = account(&state, &session, Some(notice), None).await;
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}
