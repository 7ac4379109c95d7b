//! HTML by hand: escaping (everything that is not a literal of ours goes through `esc`) and the
//! page layout every console page shares, with the headers that keep pages private and
//! scripts ours alone (`Content-Security-Policy`).

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

/// Text made safe for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Playground,
    Gallery,
    Account,
    Admin,
    None,
}

/// A notice at the top of a page: an error (`alert`) or a confirmation (`status`).
pub enum Notice {
    Error(String),
    Done(String),
}

/// One page of the console.
pub struct Page<'a> {
    pub title: &'a str,
    pub nav: Nav,
    /// The session's CSRF token when signed in (the sign-out button needs it).
    pub csrf: Option<&'a str>,
    pub notice: Option<Notice>,
    pub body: String,
}

impl Page<'_> {
    pub fn render(self, status: StatusCode) -> Response {
        let links = [
            (Nav::Playground, "/", "Playground"),
            (Nav::Gallery, "/console/gallery", "Gallery"),
            (Nav::Account, "/console/account", "Account"),
            (Nav::Admin, "/console/admin", "Admin"),
        ];
        let mut nav = String::new();
        if self.csrf.is_some() || self.nav == Nav::Admin {
            for (which, href, label) in links {
                let current = if which == self.nav {
                    " aria-current=\"page\""
                } else {
                    ""
                };
                nav.push_str(&format!("<li><a href=\"{href}\"{current}>{label}</a></li>"));
            }
        }
        if let Some(csrf) = self.csrf {
            nav.push_str(&format!(
                "<li><form method=\"post\" action=\"/console/sign-out\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\" class=\"link\">Sign out</button></form></li>",
                esc(csrf)
            ));
        }
        let notice = match &self.notice {
            Some(Notice::Error(text)) => format!(
                "<div class=\"notice error\" role=\"alert\">{}</div>",
                esc(text)
            ),
            Some(Notice::Done(text)) => format!(
                "<div class=\"notice done\" role=\"status\">{}</div>",
                esc(text)
            ),
            None => String::new(),
        };
        let html = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title} · nano-banana</title>\
             <link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
             <script src=\"/console/assets/console.js\" defer></script></head>\
             <body><a class=\"skip\" href=\"#main\">Skip to content</a>\
             <header class=\"top\"><a class=\"brand\" href=\"/\">nano-banana</a>\
             <nav aria-label=\"Main\"><ul>{nav}</ul></nav></header>\
             <main id=\"main\" tabindex=\"-1\"><h1>{title}</h1>{notice}{body}</main></body></html>",
            title = esc(self.title),
            body = self.body,
        );
        let mut response = (status, Html(html)).into_response();
        secure_headers(response.headers_mut());
        response
    }
}

/// Headers of every console page: scripts, styles and frames only from here; nothing cached.
pub fn secure_headers(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob: http: https:; script-src 'self'; \
             style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
             form-action 'self'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
}

/// A page with only a message (errors before or outside a session).
pub fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    Page {
        title,
        nav: Nav::None,
        csrf: None,
        notice: None,
        body: format!(
            "<p>{}</p><p><a href=\"/\">Back to the console</a></p>",
            esc(message)
        ),
    }
    .render(status)
}

/// `<option>`s of a `<select>`, `selected` marked.
pub fn options<'a>(values: impl IntoIterator<Item = (&'a str, &'a str)>, selected: &str) -> String {
    values
        .into_iter()
        .map(|(value, label)| {
            let mark = if value == selected { " selected" } else { "" };
            format!(
                "<option value=\"{}\"{mark}>{}</option>",
                esc(value),
                esc(label)
            )
        })
        .collect()
}

/// A hidden CSRF field.
pub fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
