//! The console in a real browser (headless Chromium through chromedriver): what a person does,
//! start to finish, with a screenshot of every page at desktop and phone widths in
//! `target/console-screenshots/` (README: Console). Chromium missing is a failure, not a skip.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::{
    helpers::{ADMIN_KEY, TOKEN, TestApp, spawn_admin_app},
    webdriver::{Browser, Element},
};

const TAB: &str = "\u{E004}";

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("console-screenshots")
}

/// Every form control of the page has a label (or an `aria-label`): the names of those that
/// do not.
async fn unlabelled(browser: &Browser) -> Value {
    browser
        .run(
            "return Array.from(document.querySelectorAll(\
               'input:not([type=hidden]), select, textarea, button'))\
             .filter(e => e.tagName === 'BUTTON'\
               ? !(e.textContent.trim() || e.getAttribute('aria-label'))\
               : !((e.labels && e.labels.length) || e.getAttribute('aria-label')))\
             .map(e => e.id || e.name || e.outerHTML.slice(0, 60));",
        )
        .await
}

/// The page fits the window's width (no sideways scrolling on a phone).
async fn fits(browser: &Browser) -> bool {
    browser
        .run("return document.documentElement.scrollWidth <= window.innerWidth + 1;")
        .await
        == Value::Bool(true)
}

/// Checks a page for a11y basics, then saves its screenshot as `name`.
async fn check_and_shoot(browser: &Browser, name: &str) {
    assert_eq!(
        unlabelled(browser).await,
        json!([]),
        "unlabelled controls on {name}"
    );
    assert!(fits(browser).await, "{name} is wider than the window");
    assert_eq!(
        browser
            .run("return document.querySelectorAll('h1').length;")
            .await,
        json!(1),
        "{name} has one heading 1"
    );
    browser
        .screenshot(&shots().join(format!("{name}.png")))
        .await;
}

/// Makes an API request with `token`, with curl when it is installed (as a user would), or the
/// suite's HTTP client: the HTTP status.
async fn api_call(app: &TestApp, token: &str) -> u16 {
    let url = format!("{}/nano-banana/images", app.address);
    let body = json!({"prompt": "from curl", "async": true}).to_string();
    // Asynchronously: the server runs on this test's (single-threaded) runtime.
    let curl = tokio::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &url,
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json", "-d", &body])
        .output()
        .await;
    match curl {
        Ok(out) if out.status.success() => {
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        }
        _ => {
            let answer = app.post("/nano-banana/images", Some(token), body).await;
            answer.status.as_u16()
        }
    }
}

/// Fills in and sends the playground form, then waits until a task other than `previous` has
/// shown its images: the new task's page link.
async fn generate(browser: &Browser, prompt: &str, previous: Option<&str>) -> String {
    let field = browser.find("#prompt").await;
    browser.clear(&field).await;
    browser.type_into(&field, prompt).await;
    browser.click(&browser.find("#submit").await).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // Read in the page in one go: the script replaces the results as the task moves on.
        let hrefs = browser
            .run(
                "return Array.from(document.querySelectorAll(\
                 \"#results figcaption a[href^='/console/tasks/']\")).map(a => a.getAttribute('href'));",
            )
            .await;
        if let Some(href) = hrefs.get(0).and_then(Value::as_str)
            && Some(href) != previous
        {
            return href.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no result appeared");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn credits(browser: &Browser, app: &TestApp) -> i64 {
    browser
        .goto(&format!("{}/console/account", app.address))
        .await;
    let shown = browser.find("#credits").await;
    browser.text(&shown).await.parse().unwrap()
}

#[tokio::test]
async fn a_person_uses_the_console_in_a_browser() {
    let app = spawn_admin_app(|_| {}).await;
    let browser = Browser::start(1280, 900).await;
    let base = app.address.clone();

    // Sign in with the bootstrap token.
    browser.goto(&format!("{base}/")).await;
    assert!(browser.url().await.ends_with("/console/sign-in"));
    check_and_shoot(&browser, "desktop-01-sign-in").await;
    browser
        .type_into(&browser.find("#token").await, TOKEN)
        .await;
    browser
        .click(&browser.find("form button[type=submit]").await)
        .await;
    browser.find("#generate").await;
    assert_eq!(browser.url().await, format!("{base}/"));

    // Keyboard: the first Tab reaches the skip link, and Tab moves on through the form.
    browser.press(TAB).await;
    assert_eq!(
        browser
            .run("return document.activeElement.className;")
            .await,
        json!("skip")
    );
    let mut reached_prompt = false;
    for _ in 0..12 {
        browser.press(TAB).await;
        if browser.run("return document.activeElement.id;").await == json!("prompt") {
            reached_prompt = true;
            break;
        }
    }
    assert!(reached_prompt, "the prompt is reachable by keyboard");

    // Generate: the image appears without a reload (a value set on the page survives).
    browser.run("window.stillThisPage = true; return 0;").await;
    let first = generate(&browser, "a banana-shaped lighthouse", None).await;
    assert_eq!(
        browser.run("return window.stillThisPage === true;").await,
        json!(true)
    );
    browser
        .wait_until(
            "return Array.from(document.querySelectorAll('#results img'))\
             .every(i => i.complete && i.naturalWidth > 0);",
            "the result image to load",
        )
        .await;
    let status = browser.text(&browser.find("#status").await).await;
    assert!(status.starts_with("Done in"), "{status}");
    let curl = browser.text(&browser.find("#curl").await).await;
    assert!(
        curl.contains("/nano-banana/images") && curl.contains("a banana-shaped lighthouse"),
        "{curl}"
    );
    assert!(!curl.contains(TOKEN));
    check_and_shoot(&browser, "desktop-02-playground").await;

    // Edit with an uploaded file.
    let upload = tempfile::Builder::new().suffix(".png").tempfile().unwrap();
    std::fs::write(upload.path(), crate::helpers::png(96, 64)).unwrap();
    browser
        .type_into(
            &browser.find("#images").await,
            upload.path().to_str().unwrap(),
        )
        .await;
    let picked = browser.text(&browser.find("#picked").await).await;
    assert!(picked.starts_with("1 image(s) chosen"), "{picked}");
    let second = generate(&browser, "make it blue", Some(&first)).await;
    assert_ne!(first, second);
    let edit_id = second.rsplit('/').next().unwrap().to_owned();
    let record = app.post_tasks(json!({"id": edit_id})).await.body;
    assert_eq!(record["request"]["action"], "edit", "{record}");

    // The gallery has both, with thumbnails.
    browser.goto(&format!("{base}/console/gallery")).await;
    browser.find("#gallery").await;
    assert_eq!(browser.find_all("#gallery li.task").await.len(), 2);
    browser
        .wait_until(
            "const t = Array.from(document.querySelectorAll('#gallery .thumbs img'));\
             return t.length >= 2 && t.every(i => i.complete && i.naturalWidth > 0);",
            "the thumbnails to load",
        )
        .await;
    check_and_shoot(&browser, "desktop-03-gallery").await;

    // The task page of the newest (the edit).
    browser
        .click(&browser.find("#gallery li.task a").await)
        .await;
    let state = browser.find("#task-state").await;
    assert_eq!(browser.text(&state).await, "Succeeded");
    assert!(browser.url().await.ends_with(&second));
    check_and_shoot(&browser, "desktop-04-task").await;

    // A new token, shown once, works with curl until revoked.
    let before = credits(&browser, &app).await;
    browser
        .type_into(&browser.find("#token-name").await, "from the browser")
        .await;
    browser
        .click(&browser.find("form[action='/console/tokens'] button").await)
        .await;
    let token = browser.text(&browser.find("#token-value").await).await;
    assert!(token.starts_with("nb-"), "{token}");
    check_and_shoot(&browser, "desktop-05-account-new-token").await;
    assert_eq!(api_call(&app, &token).await, 200);
    let revoke: Element = browser
        .find(&format!(
            "button[aria-label^='Revoke token {}']",
            &token[..8]
        ))
        .await;
    browser.click(&revoke).await;
    browser
        .wait_until(
            "return location.search === '?done=revoked';",
            "the revocation",
        )
        .await;
    assert_eq!(api_call(&app, &token).await, 401);

    // The admin area tops up the application; the account page shows the new balance.
    browser.goto(&format!("{base}/console/admin")).await;
    check_and_shoot(&browser, "desktop-06-admin-sign-in").await;
    browser
        .type_into(&browser.find("#admin-key").await, ADMIN_KEY)
        .await;
    browser
        .click(&browser.find("form button[type=submit]").await)
        .await;
    let apps = app.admin(reqwest::Method::GET, "/admin/apps", None).await;
    let id = apps.body["applications"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let amount = browser.find(&format!("#topup-{id}")).await;
    browser.type_into(&amount, "777").await;
    browser
        .click(
            &browser
                .find(&format!(
                    "form[action='/console/admin/apps/{id}/topup'] button"
                ))
                .await,
        )
        .await;
    browser
        .wait_until("return location.search === '?done=topup';", "the top-up")
        .await;
    check_and_shoot(&browser, "desktop-07-admin").await;
    // The API call above was made with the new token before it was revoked: it reserved credits.
    let after = credits(&browser, &app).await;
    let spent_meanwhile = before - after + 777;
    assert!(
        (0..=100).contains(&spent_meanwhile),
        "before {before}, after {after}: the top-up of 777 shows"
    );
    check_and_shoot(&browser, "desktop-08-account").await;

    // The same pages at a phone's width.
    browser.resize(390, 844).await;
    for (path, name) in [
        ("/".to_owned(), "phone-01-playground"),
        ("/console/gallery".to_owned(), "phone-02-gallery"),
        (second.clone(), "phone-03-task"),
        ("/console/account".to_owned(), "phone-04-account"),
        ("/console/admin".to_owned(), "phone-05-admin"),
    ] {
        browser.goto(&format!("{base}{path}")).await;
        browser.find("main h1").await;
        check_and_shoot(&browser, name).await;
    }

    // Sign out: the console asks for a token again.
    browser.goto(&format!("{base}/")).await;
    browser
        .click(
            &browser
                .find("form[action='/console/sign-out'] button")
                .await,
        )
        .await;
    browser.find("#token").await;
    browser.goto(&format!("{base}/console/gallery")).await;
    assert!(browser.url().await.contains("/console/sign-in"));
}
