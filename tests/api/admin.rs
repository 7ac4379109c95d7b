//! Every admin command, run once over the `/admin/` HTTP API and once through the command line's
//! `--server` client (which calls the same API): the same requests give the same answers.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with};

const ADMIN_KEY: &str = "admin-test-key";

#[derive(Debug, Clone, Copy)]
enum Via {
    Http,
    Cli,
}

/// One admin command in both of its forms.
struct Step<'a> {
    cli: &'a [&'a str],
    method: Method,
    path: String,
    body: Option<Value>,
}

/// Runs `step` the chosen way: the answer's status (the CLI's is 200 on success, else the code
/// it printed) and JSON body (the CLI's stdout, or its stderr as a string).
async fn run(app: &TestApp, via: Via, step: Step<'_>) -> (u16, Value) {
    match via {
        Via::Http => {
            let answer = app.admin(step.method, &step.path, step.body).await;
            (answer.status.as_u16(), answer.body)
        }
        Via::Cli => {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_nano-banana"))
                .args(["admin", "--server", &app.address, "--admin-key", ADMIN_KEY])
                .args(step.cli)
                .env_remove("NANO_BANANA_DATABASE_URL")
                .env_remove("NANO_BANANA_DATA_DIR")
                .output()
                .await
                .expect("the CLI runs");
            if output.status.success() {
                let body = serde_json::from_slice(&output.stdout).expect("the CLI prints JSON");
                (200, body)
            } else {
                let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
                // `error: no_api: no application …`: the code of the server's answer.
                let status = if stderr.contains("error: no_api: ") {
                    404
                } else if stderr.contains("error: bad_request: ") {
                    400
                } else {
                    0
                };
                (status, Value::String(stderr))
            }
        }
    }
}

async fn ok(app: &TestApp, via: Via, step: Step<'_>) -> Value {
    let (status, body) = run(app, via, step).await;
    assert_eq!(status, 200, "{via:?}: {body}");
    body
}

/// Every command, with what each must answer.
async fn every_command(app: &TestApp, via: Via) {
    let name = format!("acme-{via:?}");
    let created = ok(
        app,
        via,
        Step {
            cli: &[
                "apps",
                "create",
                "--name",
                &name,
                "--credits",
                "5",
                "--rate-per-minute",
                "60",
                "--burst",
                "2",
                "--max-concurrent",
                "3",
            ],
            method: Method::POST,
            path: "/admin/apps".into(),
            body: Some(
                json!({"name": name, "credits": 5, "rate_per_minute": 60, "burst": 2,
                              "max_concurrent": 3}),
            ),
        },
    )
    .await;
    assert_eq!(created["name"], name.as_str());
    assert_eq!(created["credits"], 5);
    assert_eq!(created["ledger_sum"], 5);
    assert_eq!(created["rate_per_minute"], 60);
    assert_eq!(created["burst"], 2);
    assert_eq!(created["max_concurrent"], 3);
    let id = created["id"].as_str().expect("an id").to_owned();

    let listed = ok(
        app,
        via,
        Step {
            cli: &["apps", "list"],
            method: Method::GET,
            path: "/admin/apps".into(),
            body: None,
        },
    )
    .await;
    let ids: Vec<&str> = listed["applications"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert!(ids.contains(&id.as_str()), "{listed}");

    let shown = ok(
        app,
        via,
        Step {
            cli: &["apps", "show", &id],
            method: Method::GET,
            path: format!("/admin/apps/{id}"),
            body: None,
        },
    )
    .await;
    assert_eq!(shown, created);

    let topped = ok(
        app,
        via,
        Step {
            cli: &["apps", "topup", &id, "7"],
            method: Method::POST,
            path: format!("/admin/apps/{id}/topup"),
            body: Some(json!({"credits": 7})),
        },
    )
    .await;
    assert_eq!(
        (topped["credits"].clone(), topped["ledger_sum"].clone()),
        (json!(12), json!(12))
    );

    let disabled = ok(
        app,
        via,
        Step {
            cli: &["apps", "disable", &id],
            method: Method::POST,
            path: format!("/admin/apps/{id}/disable"),
            body: None,
        },
    )
    .await;
    assert_eq!(disabled["disabled"], true);
    let enabled = ok(
        app,
        via,
        Step {
            cli: &["apps", "enable", &id],
            method: Method::POST,
            path: format!("/admin/apps/{id}/enable"),
            body: None,
        },
    )
    .await;
    assert_eq!(enabled["disabled"], false);

    let limited = ok(
        app,
        via,
        Step {
            cli: &["apps", "limits", &id, "--max-concurrent", "2"],
            method: Method::PUT,
            path: format!("/admin/apps/{id}/limits"),
            body: Some(json!({"max_concurrent": 2})),
        },
    )
    .await;
    assert_eq!(limited["max_concurrent"], 2);
    // Omitted limits become unlimited.
    assert_eq!(limited["rate_per_minute"], Value::Null);
    assert_eq!(limited["burst"], Value::Null);

    let token = ok(
        app,
        via,
        Step {
            cli: &[
                "tokens",
                "create",
                &id,
                "--name",
                "ci",
                "--expires-at",
                "4102444800",
            ],
            method: Method::POST,
            path: format!("/admin/apps/{id}/tokens"),
            body: Some(json!({"name": "ci", "expires_at": 4102444800i64})),
        },
    )
    .await;
    assert_eq!(token["application_id"], id.as_str());
    assert_eq!(token["name"], "ci");
    assert_eq!(token["apis"], "*");
    assert_eq!(token["expires_at"], 4102444800i64);
    let secret = token["token"].as_str().expect("the token, once");
    assert!(secret.starts_with(token["prefix"].as_str().expect("a prefix")));
    let token_id = token["id"].as_str().expect("an id").to_owned();
    // The new token works.
    let answer = app
        .post(
            "/nano-banana/tasks",
            Some(secret),
            json!({"id": "unknown"}).to_string(),
        )
        .await;
    assert_eq!((answer.status.as_u16(), answer.body), (200, json!({})));

    let tokens = ok(
        app,
        via,
        Step {
            cli: &["tokens", "list", "--application-id", &id],
            method: Method::GET,
            path: format!("/admin/tokens?application_id={id}"),
            body: None,
        },
    )
    .await;
    let tokens = tokens["tokens"].as_array().expect("a list");
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["id"], token_id.as_str());
    assert!(tokens[0].get("token").is_none(), "only prefixes are listed");

    let revoked = ok(
        app,
        via,
        Step {
            cli: &["tokens", "revoke", &token_id],
            method: Method::POST,
            path: format!("/admin/tokens/{token_id}/revoke"),
            body: None,
        },
    )
    .await;
    assert_eq!(revoked, json!({"id": token_id, "revoked": true}));
    let answer = app
        .post(
            "/nano-banana/tasks",
            Some(secret),
            json!({"id": "unknown"}).to_string(),
        )
        .await;
    assert_eq!(answer.status.as_u16(), 401, "a revoked token is refused");

    let usage = ok(
        app,
        via,
        Step {
            cli: &["usage"],
            method: Method::GET,
            path: "/admin/usage".into(),
            body: None,
        },
    )
    .await;
    assert!(usage["usage"].is_array(), "{usage}");

    // The errors: an unknown application, a value out of range.
    let (status, body) = run(
        app,
        via,
        Step {
            cli: &["apps", "topup", "no-such-app", "1"],
            method: Method::POST,
            path: "/admin/apps/no-such-app/topup".into(),
            body: Some(json!({"credits": 1})),
        },
    )
    .await;
    assert_eq!(status, 404, "{via:?}: {body}");
    assert!(
        body.to_string().contains("no application no-such-app"),
        "{body}"
    );
    let (status, body) = run(
        app,
        via,
        Step {
            cli: &["apps", "topup", &id, "0"],
            method: Method::POST,
            path: format!("/admin/apps/{id}/topup"),
            body: Some(json!({"credits": 0})),
        },
    )
    .await;
    assert_eq!(status, 400, "{via:?}: {body}");
    assert!(
        body.to_string()
            .contains("credits must be a positive number"),
        "{body}"
    );
}

#[tokio::test]
async fn every_admin_command_works_over_http_and_through_the_cli() {
    let app = spawn_app_with(|c| c.admin_key = Some(ADMIN_KEY.into())).await;
    every_command(&app, Via::Http).await;
    every_command(&app, Via::Cli).await;
}
