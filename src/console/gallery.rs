//! The gallery of the application's tasks (newest first, filtered, paged, with thumbnails) and
//! one task's page: request, response, timings, credits and callback deliveries.

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::Response,
};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Session, day_start_ms,
    html::{self, Nav, Page, esc},
    playground::outcome,
    utc,
};
use crate::{http::AppState, storage::db::TaskFilter};

const PAGE_SIZE: i64 = 24;

#[derive(Debug, Default, Deserialize)]
pub struct GalleryQuery {
    #[serde(default)]
    model: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    page: Option<i64>,
}

impl GalleryQuery {
    /// The query string of these filters on page `page`.
    fn link(&self, page: i64) -> String {
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("model", &self.model),
            ("state", &self.state),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if !value.is_empty() {
                url.append_pair(key, value);
            }
        }
        url.append_pair("page", &page.to_string());
        format!("/console/gallery?{}", url.finish())
    }
}

pub async fn page(
    State(state): State<AppState>,
    Query(query): Query<GalleryQuery>,
    session: Session,
) -> Response {
    let page = query.page.unwrap_or(1).max(1);
    let mut problems = Vec::new();
    let mut day = |text: &str, name: &str, plus: i64| {
        if text.trim().is_empty() {
            return None;
        }
        let start = day_start_ms(text);
        if start.is_none() {
            problems.push(format!("{name} must be a date like 2026-12-06."));
        }
        start.map(|ms| ms + plus)
    };
    let from = day(&query.from, "From", 0);
    let until = day(&query.to, "To", 86_400_000);
    let filter = TaskFilter {
        model: Some(query.model.clone()).filter(|m| !m.is_empty()),
        state: Some(query.state.clone()).filter(|s| !s.is_empty()),
        from,
        until,
        limit: PAGE_SIZE + 1,
        offset: (page - 1) * PAGE_SIZE,
    };
    let tasks = match state
        .tasks
        .list(&session.caller.application_id, &filter)
        .await
    {
        Ok(tasks) => tasks,
        Err(e) => {
            tracing::error!(error = %e, "console gallery failed");
            return html::message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Gallery unavailable",
                "The gallery could not be read just now. Try again in a moment.",
            );
        }
    };
    let more = tasks.len() as i64 > PAGE_SIZE;
    let models: Vec<&str> = state
        .tasks
        .offered_models()
        .iter()
        .map(|m| m.name())
        .collect();
    let model_options = html::options(
        std::iter::once(("", "Any model")).chain(models.iter().map(|m| (*m, *m))),
        &query.model,
    );
    let state_options = html::options(
        [
            ("", "Any state"),
            ("pending", "Waiting"),
            ("processing", "Running"),
            ("succeeded", "Succeeded"),
            ("failed", "Failed"),
        ],
        &query.state,
    );
    let mut cards = String::new();
    for task in tasks.iter().take(PAGE_SIZE as usize) {
        let (images, error) = outcome(task.response.as_deref());
        let thumbs: String = images
            .iter()
            .take(4)
            .enumerate()
            .map(|(i, (_, key))| match key {
                Some(key) => format!(
                    "<img src=\"/console/thumbs/{}\" alt=\"Image {} of this task\" \
                     width=\"160\" height=\"160\" loading=\"lazy\">",
                    esc(key),
                    i + 1
                ),
                None => String::new(),
            })
            .collect();
        let thumbs = if thumbs.is_empty() {
            format!(
                "<div class=\"nothumb\" aria-hidden=\"true\">{}</div>",
                state_label(&task.state)
            )
        } else {
            thumbs
        };
        let note = error
            .map(|e| format!("<p class=\"help\">{}</p>", esc(&e)))
            .unwrap_or_default();
        cards.push_str(&format!(
            "<li class=\"task\"><a href=\"/console/tasks/{id}\">\
             <div class=\"thumbs\">{thumbs}</div>\
             <span class=\"badge {state}\">{label}</span> <span class=\"model\">{model}</span>\
             <time datetime=\"{iso}\">{when}</time></a>{note}</li>",
            id = esc(&task.id),
            state = esc(&task.state),
            label = state_label(&task.state),
            model = esc(&task.model),
            iso = task.created_at,
            when = utc(task.created_at),
        ));
    }
    if cards.is_empty() {
        cards = "<li class=\"empty\">No tasks match. Make one in the \
                 <a href=\"/\">playground</a>.</li>"
            .to_owned();
    }
    let mut pager = String::new();
    if page > 1 {
        pager.push_str(&format!(
            "<a rel=\"prev\" href=\"{}\">← Newer</a>",
            esc(&query.link(page - 1))
        ));
    }
    pager.push_str(&format!("<span>Page {page}</span>"));
    if more {
        pager.push_str(&format!(
            "<a rel=\"next\" href=\"{}\">Older →</a>",
            esc(&query.link(page + 1))
        ));
    }
    let body = format!(
        "<form class=\"card filters\" method=\"get\" action=\"/console/gallery\" \
           aria-label=\"Filter tasks\">\
         <div><label for=\"f-model\">Model</label><select id=\"f-model\" name=\"model\">{model_options}</select></div>\
         <div><label for=\"f-state\">State</label><select id=\"f-state\" name=\"state\">{state_options}</select></div>\
         <div><label for=\"f-from\">From</label><input id=\"f-from\" name=\"from\" type=\"date\" value=\"{from}\"></div>\
         <div><label for=\"f-to\">To</label><input id=\"f-to\" name=\"to\" type=\"date\" value=\"{to}\"></div>\
         <button type=\"submit\">Filter</button></form>\
         <ul class=\"gallery\" id=\"gallery\">{cards}</ul>\
         <nav class=\"pager\" aria-label=\"Pages\">{pager}</nav>",
        from = esc(&query.from),
        to = esc(&query.to),
    );
    Page {
        title: "Gallery",
        nav: Nav::Gallery,
        csrf: Some(&session.csrf),
        notice: (!problems.is_empty()).then(|| html::Notice::Error(problems.join(" "))),
        body,
    }
    .render(StatusCode::OK)
}

fn state_label(state: &str) -> &'static str {
    match state {
        "pending" => "Waiting",
        "processing" => "Running",
        "succeeded" => "Succeeded",
        "failed" => "Failed",
        _ => "Unknown",
    }
}

/// A request for showing: `data:` URIs (uploaded images) shortened to their type and size.
fn shorten_data_uris(value: &mut Value) {
    match value {
        Value::String(text) if text.starts_with("data:") && text.len() > 120 => {
            let kind = text.split(';').next().unwrap_or("data:");
            *text = format!("{kind};base64,… ({} KB)", text.len() * 3 / 4 / 1000);
        }
        Value::Array(items) => items.iter_mut().for_each(shorten_data_uris),
        Value::Object(map) => map.values_mut().for_each(shorten_data_uris),
        _ => {}
    }
}

pub async fn task_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    session: Session,
) -> Response {
    let details = match state
        .tasks
        .details(&session.caller.application_id, &id)
        .await
    {
        Ok(Some(details)) => details,
        Ok(None) => {
            return html::message_page(
                StatusCode::NOT_FOUND,
                "No such task",
                "This application has no task with that id.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "console task page failed");
            return html::message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Task unavailable",
                "The task could not be read just now. Try again in a moment.",
            );
        }
    };
    let task = &details.summary;
    let record = &details.record;
    let (images, error) = outcome(task.response.as_deref());
    let figures: String = images
        .iter()
        .enumerate()
        .map(|(i, (url, key))| {
            let edit = key
                .as_ref()
                .map(|k| {
                    format!(
                        " <a class=\"button secondary\" href=\"/?source={}\">Edit this</a>",
                        esc(k)
                    )
                })
                .unwrap_or_default();
            format!(
                "<figure><a href=\"{u}\"><img src=\"{u}\" alt=\"Result {n}\"></a>\
                 <figcaption><a class=\"button\" href=\"{u}\" download>Download image {n}</a>{edit}\
                 </figcaption></figure>",
                u = esc(url),
                n = i + 1,
            )
        })
        .collect();
    let error = error
        .map(|e| {
            format!(
                "<div class=\"notice error\" role=\"alert\">{}</div>",
                esc(&e)
            )
        })
        .unwrap_or_default();
    let time = |ms: Option<i64>| ms.map(utc).unwrap_or_else(|| "—".to_owned());
    let elapsed = record
        .elapsed
        .map(|s| format!("{s:.2} s"))
        .unwrap_or_else(|| "—".to_owned());
    let charged = task
        .charged
        .map(|c| c.to_string())
        .unwrap_or_else(|| "not settled yet".to_owned());
    let mut request = record.request.clone();
    shorten_data_uris(&mut request);
    let request = serde_json::to_string_pretty(&request).unwrap_or_default();
    let response = record
        .response
        .as_ref()
        .map(|r| serde_json::to_string_pretty(r).unwrap_or_default())
        .unwrap_or_else(|| "(not finished yet)".to_owned());
    let deliveries = if details.deliveries.is_empty() {
        "<p>No callback was delivered for this task (none was asked for, or none is due yet).</p>"
            .to_owned()
    } else {
        let rows: String = details
            .deliveries
            .iter()
            .map(|d| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td><td>{}</td></tr>",
                    d.attempt,
                    utc(d.at),
                    esc(&d.url),
                    d.status.map(|s| s.to_string()).unwrap_or_else(|| "—".into()),
                    d.latency_ms,
                    esc(d.error.as_deref().unwrap_or("")),
                )
            })
            .collect();
        format!(
            "<div class=\"scroll\"><table><caption>Callback delivery attempts</caption><thead><tr>\
             <th scope=\"col\">Attempt</th><th scope=\"col\">At</th><th scope=\"col\">URL</th>\
             <th scope=\"col\">Status</th><th scope=\"col\">Took</th><th scope=\"col\">Error</th>\
             </tr></thead><tbody>{rows}</tbody></table></div>"
        )
    };
    let body = format!(
        "{error}<div class=\"results large\" id=\"task-images\">{figures}</div>\
         <section class=\"card\" aria-labelledby=\"facts\"><h2 id=\"facts\">Facts</h2><dl class=\"facts\">\
         <dt>Task</dt><dd><code>{id}</code></dd>\
         <dt>State</dt><dd><span class=\"badge {state}\" id=\"task-state\">{label}</span></dd>\
         <dt>Model</dt><dd>{model}</dd>\
         <dt>Created</dt><dd>{created}</dd><dt>Started</dt><dd>{started}</dd>\
         <dt>Finished</dt><dd>{finished}</dd><dt>Took</dt><dd>{elapsed}</dd>\
         <dt>Credits reserved</dt><dd>{reserved}</dd><dt>Credits charged</dt><dd>{charged}</dd>\
         <dt>Trace id</dt><dd><code>{trace}</code></dd></dl></section>\
         <section class=\"card\" aria-labelledby=\"callbacks\"><h2 id=\"callbacks\">Callback deliveries</h2>{deliveries}</section>\
         <section class=\"card\" aria-labelledby=\"req\"><h2 id=\"req\">Request</h2><pre><code>{request}</code></pre></section>\
         <section class=\"card\" aria-labelledby=\"resp\"><h2 id=\"resp\">Response</h2><pre><code>{response}</code></pre></section>",
        id = esc(&task.id),
        state = esc(&task.state),
        label = state_label(&task.state),
        model = esc(&task.model),
        created = utc(task.created_at),
        started = time(task.started_at),
        finished = time(task.finished_at),
        reserved = task.reserved,
        trace = esc(&record.trace_id),
        request = esc(&request),
        response = esc(&response),
    );
    Page {
        title: "Task",
        nav: Nav::Gallery,
        csrf: Some(&session.csrf),
        notice: None,
        body,
    }
    .render(StatusCode::OK)
}
