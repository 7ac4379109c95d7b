//! The web console over plain HTTP: sign-in and its cookie, CSRF on every form, one
//! application never seeing another's tasks, the playground making a task, thumbnails, tokens,
//! the admin area, and no token ever in a URL or a log line. (What a person sees and clicks is
//! in `console_browser.rs`.)

use std::time::{Duration, Instant};

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, TestApp, application, spawn_admin_app, spawn_app, spawn_app_with};

/// A client that does not follow redirects and keeps no cookies: each test sees every answer.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A signed-in console session: its cookie header and its forms' CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
    /// The `Set-Cookie` that signed in.
    pub set_cookie: String,
}

/// The value of `<input ... name="csrf" value="...">` in a page.
fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// The `name=value` part of the `Set-Cookie` header naming `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

/// Posts an urlencoded form with `cookie`.
async fn post_form(
    base: &str,
    path: &str,
    cookie: &str,
    pairs: &[(&str, &str)],
) -> reqwest::Response {
    client()
        .post(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(pairs))
        .send()
        .await
        .unwrap()
}

async fn get(base: &str, path: &str, cookie: &str) -> reqwest::Response {
    client()
        .get(format!("{base}{path}"))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
}

/// The page at `path`, as `cookie` sees it.
async fn read_page(base: &str, path: &str, cookie: &str) -> String {
    get(base, path, cookie).await.text().await.unwrap()
}

/// The `name=value` of a `Set-Cookie` header, as a browser sends it back.
fn cookie_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// Fills in a form that is guarded by a check cookie instead of a session (sign-in, sign-up,
/// the admin area's sign-in) as a browser does: opens `page`, then posts `field` to `action`
/// with the page's check cookie and CSRF value.
async fn submit_guarded_form(
    base: &str,
    page: &str,
    action: &str,
    field: (&str, &str),
) -> reqwest::Response {
    let page = get(base, page, "").await;
    assert_eq!(page.status(), 200);
    let presign = set_cookie(&page, "nb_presign").expect("the sign-in check cookie");
    let check = csrf_in(&page.text().await.unwrap());
    post_form(
        base,
        action,
        &cookie_of(&presign),
        &[("csrf", &check), field],
    )
    .await
}

/// The new token a page shows once (after making one, or signing up).
fn shown_token(html: &str) -> String {
    let at = html.find("<code id=\"token-value\">").unwrap() + 23;
    html[at..].split('<').next().unwrap().to_owned()
}

/// Posts a console form as the signed-in `session`, its CSRF token first.
async fn post_as(
    base: &str,
    path: &str,
    session: &Session,
    pairs: &[(&str, &str)],
) -> reqwest::Response {
    let mut fields = vec![("csrf", session.csrf.as_str())];
    fields.extend_from_slice(pairs);
    post_form(base, path, &session.cookie, &fields).await
}

/// Signs in with `token` the way a browser does (the sign-in page's check cookie and field).
pub async fn sign_in(base: &str, token: &str) -> Session {
    let answer = submit_guarded_form(
        base,
        "/console/sign-in",
        "/console/sign-in",
        ("token", token),
    )
    .await;
    assert_eq!(answer.status(), 303, "{:?}", answer.text().await);
    assert_eq!(answer.headers()[header::LOCATION], "/");
    let set = set_cookie(&answer, "nb_session").expect("a session cookie");
    let cookie = cookie_of(&set);
    let home = get(base, "/", &cookie).await;
    assert_eq!(home.status(), 200);
    let csrf = csrf_in(&home.text().await.unwrap());
    Session {
        cookie,
        csrf,
        set_cookie: set,
    }
}

/// A multipart form body (text fields, then files as `(field, file name, bytes)`).
pub fn multipart(fields: &[(&str, &str)], files: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----nano-banana-test-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    for (name, file, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n\
                 Content-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Submits the playground form: as its script does (asking for JSON) when `script`, else as a
/// browser without script does (and gets a page).
async fn submit_playground(
    base: &str,
    cookie: &str,
    fields: &[(&str, &str)],
    files: &[(&str, &str, &[u8])],
    script: bool,
) -> reqwest::Response {
    let (content_type, body) = multipart(fields, files);
    let mut request = client()
        .post(format!("{base}/console/generate"))
        .header(header::COOKIE, cookie)
        .header(header::CONTENT_TYPE, content_type);
    if script {
        request = request.header(header::ACCEPT, "application/json");
    }
    request.body(body).send().await.unwrap()
}

/// Submits the playground form as its script does: the status and the JSON answer.
async fn generate(
    app: &TestApp,
    session: &Session,
    fields: &[(&str, &str)],
    files: &[(&str, &str, &[u8])],
) -> (StatusCode, Value) {
    let answer = submit_playground(&app.address, &session.cookie, fields, files, true).await;
    let status = answer.status();
    let text = answer.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(json!({"html": text})),
    )
}

/// Polls the playground's state route until the task has finished.
async fn wait_done(app: &TestApp, session: &Session, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state: Value = get(
            &app.address,
            &format!("/console/tasks/{id}/state"),
            &session.cookie,
        )
        .await
        .json()
        .await
        .unwrap();
        if state["done"] == true {
            return state;
        }
        assert!(Instant::now() < deadline, "{state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_console_is_at_the_root_and_asks_for_a_token_first() {
    let app = spawn_app().await;
    let root = get(&app.address, "/", "").await;
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()[header::LOCATION], "/console/sign-in");
    let page = get(&app.address, "/console/sign-in", "").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<label for=\"token\">"), "{html}");
    // The assets are in the binary.
    for asset in ["console.css", "console.js"] {
        let answer = get(&app.address, &format!("/console/assets/{asset}"), "").await;
        assert_eq!(answer.status(), 200);
        assert!(answer.text().await.unwrap().len() > 1000);
    }
    assert_eq!(
        get(&app.address, "/console/assets/other.js", "")
            .await
            .status(),
        404
    );
    // The API's unknown paths stay `no_api`.
    let answer = crate::helpers::answer(app.get("/console-not").await).await;
    crate::helpers::assert_error(&answer, 404, "no_api");
}

#[tokio::test]
async fn the_session_cookie_is_http_only_strict_and_secure_over_https() {
    let app = spawn_app().await;
    let session = sign_in(&app.address, &app.token).await;
    let flags = &session.set_cookie;
    assert!(flags.contains("; HttpOnly"), "{flags}");
    assert!(flags.contains("; SameSite=Strict"), "{flags}");
    assert!(flags.contains("; Path=/"), "{flags}");
    assert!(!flags.contains("Secure"), "plain http: {flags}");
    // The token is not in the cookie as typed, nor in any page.
    assert!(!flags.contains(&app.token));
    let home = read_page(&app.address, "/", &session.cookie).await;
    assert!(!home.contains(&app.token));

    let https =
        spawn_app_with(|c| c.public_base_url = Some("https://console.example".into())).await;
    let session = sign_in(&https.address, &https.token).await;
    assert!(
        session.set_cookie.contains("; Secure"),
        "{}",
        session.set_cookie
    );

    // A wrong token: a message for a person, no cookie.
    let page = get(&app.address, "/console/sign-in", "").await;
    let presign = set_cookie(&page, "nb_presign").unwrap();
    let presign = presign.split(';').next().unwrap().to_owned();
    let check = csrf_in(&page.text().await.unwrap());
    let answer = post_form(
        &app.address,
        "/console/sign-in",
        &presign,
        &[("csrf", &check), ("token", "nb-wrong")],
    )
    .await;
    assert_eq!(answer.status(), 401);
    assert!(set_cookie(&answer, "nb_session").is_none());
    let html = answer.text().await.unwrap();
    assert!(html.contains("That token is not valid"), "{html}");
    assert!(!html.contains("{\""), "no JSON dump: {html}");
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let app = spawn_admin_app(|_| {}).await;
    let session = sign_in(&app.address, &app.token).await;
    // Sign-in itself: without the check cookie, or with another value.
    for (presign, csrf) in [("", "x"), ("nb_presign=abc", "abd")] {
        let answer = post_form(
            &app.address,
            "/console/sign-in",
            presign,
            &[("csrf", csrf), ("token", &app.token)],
        )
        .await;
        assert_eq!(answer.status(), 403);
        assert!(set_cookie(&answer, "nb_session").is_none());
    }

    // The playground: no task is made without the token, or with another session's.
    for csrf in ["", "0".repeat(64).as_str()] {
        let (status, body) =
            generate(&app, &session, &[("csrf", csrf), ("prompt", "a cat")], &[]).await;
        assert_eq!(status, 403, "{body}");
    }
    assert_eq!(
        crate::helpers::task_count(&app, &application_id(&app).await).await,
        0
    );

    // Tokens, sign-out and every admin form.
    let user_forms: [(&str, &[(&str, &str)]); 3] = [
        ("/console/tokens", &[("name", "x")]),
        ("/console/tokens/x/revoke", &[]),
        ("/console/sign-out", &[("csrf", "nope")]),
    ];
    for (path, pairs) in user_forms {
        let answer = post_form(&app.address, path, &session.cookie, pairs).await;
        assert_eq!(answer.status(), 403, "{path}");
    }
    let admin = admin_sign_in(&app.address).await;
    let id = application_id(&app).await;
    for path in [
        "/console/admin/apps".to_owned(),
        format!("/console/admin/apps/{id}/topup"),
        format!("/console/admin/apps/{id}/limits"),
        format!("/console/admin/apps/{id}/disable"),
        format!("/console/admin/apps/{id}/enable"),
        "/console/admin/sign-out".to_owned(),
    ] {
        let answer = post_form(
            &app.address,
            &path,
            &admin.cookie,
            &[("name", "x"), ("credits", "5")],
        )
        .await;
        assert_eq!(answer.status(), 403, "{path}");
    }
    // The user's CSRF token is not the admin's.
    let answer = post_form(
        &app.address,
        &format!("/console/admin/apps/{id}/topup"),
        &admin.cookie,
        &[("csrf", &session.csrf), ("credits", "5")],
    )
    .await;
    assert_eq!(answer.status(), 403);
    assert_eq!(crate::helpers::balance(&app, &id).await.0, 1_000_000);
}

/// Posts the admin area's form `action` (`topup`, `limits`, `disable`, …) for application `id`.
async fn admin_app_form(
    base: &str,
    admin: &Session,
    id: &str,
    action: &str,
    pairs: &[(&str, &str)],
) -> reqwest::Response {
    post_as(
        base,
        &format!("/console/admin/apps/{id}/{action}"),
        admin,
        pairs,
    )
    .await
}

/// The bootstrap application's id.
async fn application_id(app: &TestApp) -> String {
    let apps = app.admin(reqwest::Method::GET, "/admin/apps", None).await;
    apps.body["applications"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Signs in to the admin area with `ADMIN_KEY`.
async fn admin_sign_in(base: &str) -> Session {
    let answer = submit_guarded_form(
        base,
        "/console/admin",
        "/console/admin/sign-in",
        ("key", ADMIN_KEY),
    )
    .await;
    assert_eq!(answer.status(), 303);
    let set = set_cookie(&answer, "nb_admin").unwrap();
    let cookie = cookie_of(&set);
    let csrf = csrf_in(&read_page(base, "/console/admin", &cookie).await);
    Session {
        cookie,
        csrf,
        set_cookie: set,
    }
}

#[tokio::test]
async fn another_applications_task_page_answers_404() {
    let app = spawn_admin_app(|_| {}).await;
    let (_, other_token) = application(&app, 1000, json!({})).await;
    let theirs = app
        .post_images_as(&other_token, json!({"prompt": "theirs", "async": true}))
        .await;
    let their_id = theirs.body["task_id"].as_str().unwrap().to_owned();
    let session = sign_in(&app.address, &app.token).await;
    let task_page = format!("/console/tasks/{their_id}");
    let page = get(&app.address, &task_page, &session.cookie).await;
    assert_eq!(page.status(), 404);
    assert!(!page.text().await.unwrap().contains("theirs"));
    let state_path = format!("{task_page}/state");
    let state = get(&app.address, &state_path, &session.cookie).await;
    assert_eq!(state.status(), 404);
    let gallery = read_page(&app.address, "/console/gallery", &session.cookie).await;
    assert!(!gallery.contains(&their_id));
    // Their own session sees it.
    let theirs = sign_in(&app.address, &other_token).await;
    let page = get(&app.address, &task_page, &theirs.cookie).await;
    assert_eq!(page.status(), 200);
}

#[tokio::test]
async fn the_playground_makes_tasks_the_gallery_and_task_page_show_them() {
    let app = spawn_app().await;
    let session = sign_in(&app.address, &app.token).await;
    let (status, made) = generate(
        &app,
        &session,
        &[
            ("csrf", &session.csrf),
            ("prompt", "a <b>bold</b> cat"),
            ("count", "2"),
            ("aspect_ratio", "16:9"),
        ],
        &[],
    )
    .await;
    assert_eq!(status, 200, "{made}");
    let id = made["task_id"].as_str().unwrap().to_owned();
    let done = wait_done(&app, &session, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let images = done["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    let key = images[0]["key"].as_str().unwrap().to_owned();

    // An edit of an uploaded file, and an edit of the earlier result ("edit this").
    let png = crate::helpers::png(64, 48);
    let (status, edit) = generate(
        &app,
        &session,
        &[
            ("csrf", &session.csrf),
            ("prompt", "make it blue"),
            ("source", &key),
        ],
        &[("images", "input.png", &png)],
    )
    .await;
    assert_eq!(status, 200, "{edit}");
    let edit_id = edit["task_id"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_done(&app, &session, &edit_id).await["state"],
        "succeeded"
    );
    let record = app.post_tasks(json!({"id": edit_id})).await.body;
    assert_eq!(record["request"]["action"], "edit");
    assert_eq!(record["request"]["image_urls"].as_array().unwrap().len(), 2);

    // A refusal is a sentence, and the form keeps what was typed (no script: a page).
    let answer = submit_playground(
        &app.address,
        &session.cookie,
        &[
            ("csrf", &session.csrf),
            ("prompt", "kept prompt"),
            ("count", "9"),
        ],
        &[],
        false,
    )
    .await;
    assert_eq!(answer.status(), 400);
    let html = answer.text().await.unwrap();
    assert!(
        html.contains("Count must be an integer from 1 to 4."),
        "{html}"
    );
    assert!(html.contains(">kept prompt</textarea>"), "{html}");
    let (status, refused) = generate(
        &app,
        &session,
        &[("csrf", &session.csrf), ("prompt", " ")],
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(refused, json!({"error": "Prompt must not be empty."}));

    // The gallery: newest first, with thumbnails made once and kept in the store.
    let gallery = read_page(&app.address, "/console/gallery", &session.cookie).await;
    let (first, second) = (gallery.find(&edit_id).unwrap(), gallery.find(&id).unwrap());
    assert!(first < second, "newest first");
    assert!(gallery.contains(&format!("/console/thumbs/{key}")));
    let thumb = get(&app.address, &format!("/console/thumbs/{key}"), "").await;
    assert_eq!(thumb.status(), 200);
    assert_eq!(thumb.headers()[header::CONTENT_TYPE], "image/jpeg");
    let bytes = thumb.bytes().await.unwrap();
    let small = image::load_from_memory(&bytes).unwrap();
    assert!(small.width() <= 320 && small.height() <= 320);
    assert_eq!(app.store.read_thumbnail(&key).await.unwrap(), bytes);
    assert_eq!(
        get(&app.address, "/console/thumbs/not-a-key.png", "")
            .await
            .status(),
        404
    );
    // Filters and paging.
    let filtered = read_page(
        &app.address,
        "/console/gallery?state=failed",
        &session.cookie,
    )
    .await;
    assert!(!filtered.contains(&id) && filtered.contains("No tasks match"));
    let dated = read_page(
        &app.address,
        "/console/gallery?from=2000-01-01&to=2000-01-02",
        &session.cookie,
    )
    .await;
    assert!(!dated.contains(&id));
    let wrong = read_page(
        &app.address,
        "/console/gallery?from=yesterday",
        &session.cookie,
    )
    .await;
    assert!(wrong.contains("From must be a date"), "{wrong}");

    // The task page: request (escaped), response, timings, credits.
    let page = get(
        &app.address,
        &format!("/console/tasks/{id}"),
        &session.cookie,
    )
    .await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("a &lt;b&gt;bold&lt;/b&gt; cat"), "escaped");
    assert!(!html.contains("<b>bold</b>"));
    assert!(html.contains("Credits charged"));
    assert!(html.contains("Download image 2"));
    assert!(html.contains(&format!("/?source={key}")));
}

#[tokio::test]
async fn tokens_made_in_the_console_work_until_revoked() {
    let app = spawn_app().await;
    let session = sign_in(&app.address, &app.token).await;
    let answer = post_as(
        &app.address,
        "/console/tokens",
        &session,
        &[("name", "laptop")],
    )
    .await;
    assert_eq!(answer.status(), 200);
    let html = answer.text().await.unwrap();
    let token = shown_token(&html);
    assert!(token.starts_with("nb-"), "{token}");
    let made = app.post_images_as(&token, json!({"prompt": "x"})).await;
    assert_eq!(made.status, 200, "{}", made.body);
    // Shown once: the account page lists its prefix only.
    let account = read_page(&app.address, "/console/account", &session.cookie).await;
    assert!(!account.contains(&token));
    assert!(account.contains(&token[..8]));
    let record = app
        .post_tasks_as(&token, json!({"id": made.body["task_id"]}))
        .await;
    let token_id = record.body["credential_id"].as_str().unwrap().to_owned();
    let answer = post_as(
        &app.address,
        &format!("/console/tokens/{token_id}/revoke"),
        &session,
        &[],
    )
    .await;
    assert_eq!(answer.status(), 303);
    let refused = app.post_images_as(&token, json!({"prompt": "x"})).await;
    crate::helpers::assert_error(&refused, 401, "invalid_token");
    // Revoking the session's own token ends the session.
    let own = read_page(&app.address, "/console/account", &session.cookie).await;
    assert!(own.contains("this session"));
    let answer = post_as(
        &app.address,
        "/console/tokens/not-ours/revoke",
        &session,
        &[],
    )
    .await;
    assert_eq!(answer.status(), 404);
}

#[tokio::test]
async fn the_admin_area_tops_up_and_the_account_shows_it() {
    let app = spawn_admin_app(|_| {}).await;
    // Without the admin key configured the area does not exist.
    let plain = spawn_app().await;
    assert_eq!(
        get(&plain.address, "/console/admin", "").await.status(),
        404
    );

    let admin = admin_sign_in(&app.address).await;
    let id = application_id(&app).await;
    let answer = admin_app_form(&app.address, &admin, &id, "topup", &[("credits", "2500")]).await;
    assert_eq!(answer.status(), 303);
    assert_eq!(crate::helpers::balance(&app, &id).await.0, 1_002_500);
    let session = sign_in(&app.address, &app.token).await;
    let account = read_page(&app.address, "/console/account", &session.cookie).await;
    assert!(
        account.contains("<span id=\"credits\">1002500</span>"),
        "{account}"
    );
    // A refused change is a sentence on the admin page.
    let answer = admin_app_form(&app.address, &admin, &id, "topup", &[("credits", "-5")]).await;
    assert_eq!(answer.status(), 400);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("Not done: Credits must be a positive number.")
    );
    // Limits, disable (the application's session ends), enable.
    let answer = admin_app_form(
        &app.address,
        &admin,
        &id,
        "limits",
        &[
            ("rate_per_minute", "60"),
            ("burst", ""),
            ("max_concurrent", "3"),
        ],
    )
    .await;
    assert_eq!(answer.status(), 303);
    let disabled = admin_app_form(&app.address, &admin, &id, "disable", &[]).await;
    assert_eq!(disabled.status(), 303);
    let refused = get(&app.address, "/console/account", &session.cookie).await;
    assert_eq!(
        refused.headers()[header::LOCATION],
        "/console/sign-in?reason=disabled"
    );
    let enabled = admin_app_form(&app.address, &admin, &id, "enable", &[]).await;
    assert_eq!(enabled.status(), 303);
    let routes = read_page(&app.address, "/console/admin", &admin.cookie).await;
    assert!(routes.contains("Upstream routes"));
    assert!(routes.contains("placeholder"), "{routes}");
    // A wrong admin key is refused with a sentence.
    let wrong = read_page(&app.address, "/console/admin", "nb_admin=d3Jvbmc").await;
    assert!(wrong.contains("Admin key"));
}

#[tokio::test]
async fn sign_out_clears_the_cookie() {
    let app = spawn_app().await;
    let session = sign_in(&app.address, &app.token).await;
    let answer = post_as(&app.address, "/console/sign-out", &session, &[]).await;
    assert_eq!(answer.status(), 303);
    let cleared = set_cookie(&answer, "nb_session").unwrap();
    assert!(
        cleared.starts_with("nb_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test]
async fn no_token_ever_appears_in_a_url_or_a_log_line() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = nano_banana_testkit::free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_nano-banana"));
    command
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("NANO_BANANA_BOOTSTRAP_TOKEN", crate::helpers::TOKEN)
        .env("NANO_BANANA_ADMIN_KEY", ADMIN_KEY)
        .env_remove("GEMINI_API_KEY")
        .env_remove("GOOGLE_API_KEY")
        // Everything the server and its libraries log, at the most detailed useful level.
        .env("RUST_LOG", "debug")
        // Standard output is the first start's banner, which shows the new token once by design;
        // the log is standard error.
        .stdout(std::process::Stdio::null())
        .stderr(log);
    let server = crate::procs::start(command, port).await;
    let base = server.base_url.clone();
    let token = crate::helpers::TOKEN;

    let session = sign_in(&base, token).await;
    let fields = [("csrf", session.csrf.as_str()), ("prompt", "log test")];
    let made: Value = submit_playground(&base, &session.cookie, &fields, &[], true)
        .await
        .json()
        .await
        .unwrap();
    let id = made["task_id"].as_str().unwrap().to_owned();
    // Every location the console sends a browser to, and every link of its pages.
    let mut locations = Vec::new();
    let created = post_as(&base, "/console/tokens", &session, &[("name", "x")]).await;
    let html = created.text().await.unwrap();
    let new_token = shown_token(&html);
    let other = sign_in(&base, &new_token).await;
    for path in [
        "/",
        "/console/gallery",
        "/console/account",
        &format!("/console/tasks/{id}"),
    ] {
        let page = get(&base, path, &other.cookie).await;
        if let Some(location) = page.headers().get(header::LOCATION) {
            locations.push(location.to_str().unwrap().to_owned());
        }
        let html = page.text().await.unwrap();
        for href in html
            .split("href=\"")
            .skip(1)
            .chain(html.split("src=\"").skip(1))
        {
            locations.push(href.split('"').next().unwrap().to_owned());
        }
    }
    let signed_out = post_as(&base, "/console/sign-out", &other, &[]).await;
    locations.push(
        signed_out.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned(),
    );
    let wrong = sign_in_refused(&base, "nb-a-wrong-token-that-must-not-be-logged").await;
    assert_eq!(wrong, 401);
    drop(server);

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.lines().count() > 10, "the server logged: {log}");
    assert!(
        log.contains("/console/sign-in"),
        "requests are logged: {log}"
    );
    for secret in [
        token,
        new_token.as_str(),
        "nb-a-wrong-token-that-must-not-be-logged",
        ADMIN_KEY,
    ] {
        assert!(!log.contains(secret), "{secret} is in the log");
        let encoded = session_cookie_value(secret);
        assert!(!log.contains(&encoded), "{secret}'s cookie is in the log");
        for location in &locations {
            assert!(!location.contains(secret), "{location}");
            assert!(!location.contains(&encoded), "{location}");
        }
    }
    assert!(locations.len() > 10, "{locations:?}");
}

/// What the session cookie holds for `token` (URL-safe base64).
fn session_cookie_value(token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.as_bytes())
}

/// Signs in with a token that is refused: the status.
async fn sign_in_refused(base: &str, token: &str) -> u16 {
    submit_guarded_form(
        base,
        "/console/sign-in",
        "/console/sign-in",
        ("token", token),
    )
    .await
    .status()
    .as_u16()
}

/// Submits the sign-up form as a browser does: the status, the page and the session cookie.
async fn sign_up(base: &str, name: &str) -> (u16, String, Option<String>) {
    let answer =
        submit_guarded_form(base, "/console/sign-up", "/console/sign-up", ("name", name)).await;
    let cookie = set_cookie(&answer, "nb_session").map(|c| cookie_of(&c));
    (
        answer.status().as_u16(),
        answer.text().await.unwrap(),
        cookie,
    )
}

#[tokio::test]
async fn sign_up_is_off_unless_asked_for_then_limited_per_address() {
    let plain = spawn_app().await;
    assert_eq!(
        get(&plain.address, "/console/sign-up", "").await.status(),
        404
    );
    assert_eq!(
        post_form(&plain.address, "/console/sign-up", "", &[("name", "x")])
            .await
            .status(),
        404
    );
    let signin = read_page(&plain.address, "/console/sign-in", "").await;
    assert!(!signin.contains("/console/sign-up"));

    let app = spawn_app_with(|c| c.signup_credits = Some(500)).await;
    let signin = read_page(&app.address, "/console/sign-in", "").await;
    assert!(signin.contains("/console/sign-up"));
    // Without the form's check value: refused, nothing made.
    let answer = post_form(
        &app.address,
        "/console/sign-up",
        "nb_presign=a",
        &[("csrf", "b"), ("name", "x")],
    )
    .await;
    assert_eq!(answer.status(), 403);

    let (status, html, cookie) = sign_up(&app.address, "Ada's <studio>").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Ada&#39;s &lt;studio&gt;"));
    let token = shown_token(&html);
    let made = app
        .post_images_as(&token, json!({"prompt": "x", "async": true}))
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    // Signed in with it: the account is the new application's, with its credits.
    let cookie = cookie.expect("signed in");
    let account = read_page(&app.address, "/console/account", &cookie).await;
    assert!(account.contains("Ada&#39;s &lt;studio&gt;"), "{account}");
    assert!(account.contains("<span id=\"credits\">"), "{account}");

    // Two at once per address, then one a minute: the third is refused, the name kept.
    let (status, _, _) = sign_up(&app.address, "second").await;
    assert_eq!(status, 200);
    let (status, html, cookie) = sign_up(&app.address, "third one").await;
    assert_eq!(status, 429);
    assert!(cookie.is_none());
    assert!(
        html.contains("Too many sign-ups from your address"),
        "{html}"
    );
    assert!(html.contains("value=\"third one\""));
    let (status, html, _) = sign_up(&app.address, " ").await;
    assert!(status == 400 || status == 429, "{status}: {html}");
}
