//! The OpenAPI document describes exactly the routes the server answers.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::answer;

#[tokio::test]
async fn every_documented_route_exists_and_every_route_is_documented() {
    let app = crate::helpers::spawn_app_with(|c| c.admin_key = Some("k".into())).await;
    let doc = answer(app.get("/openapi.json").await).await.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeSet<String> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    let served: BTreeSet<String> = [
        "POST /nano-banana/images",
        "POST /gemini/images",
        "POST /nanobanana/images",
        "POST /nano-banana/tasks",
        "POST /gemini/tasks",
        "POST /nanobanana/tasks",
        "GET /images/{key}",
        "GET /healthz",
        "GET /readyz",
        "GET /openapi.json",
        "GET /metrics",
        "POST /admin/apps",
        "GET /admin/apps",
        "GET /admin/apps/{id}",
        "POST /admin/apps/{id}/topup",
        "POST /admin/apps/{id}/disable",
        "POST /admin/apps/{id}/enable",
        "PUT /admin/apps/{id}/limits",
        "POST /admin/apps/{id}/tokens",
        "GET /admin/tokens",
        "POST /admin/tokens/{id}/revoke",
        "GET /admin/usage",
        "GET /admin/routes",
        "POST /v1/images/generations",
        "POST /v1/images/edits",
        "POST /openai/images/generations",
        "POST /openai/images/edits",
        "GET /v1/models",
        "GET /v1/models/{id}",
        "POST /v1/models/{id}",
        "POST /v1beta/models/{target}",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(documented, served);

    // Each documented public route answers; each admin route exists (it asks for the key).
    let made = app.post_images(json!({"prompt": "doc"})).await;
    let image_url = made.body["data"][0]["image_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = image_url.rsplit('/').next().unwrap().to_owned();
    for route in served.iter().filter(|r| r.contains(" /admin/")) {
        let (method, path) = route.split_once(' ').unwrap();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app
            .client
            .request(
                method,
                format!("{}{}", app.address, path.replace("{id}", "x")),
            )
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "no_token", "{route}");
    }
    // The dialects' routes, each with a request it answers 200 to.
    let png = crate::helpers::data_uri(&crate::helpers::png(4, 4));
    let contents = json!({"contents": [{"parts": [{"text": "doc"}]}]});
    let dialects = [
        (
            "POST /v1/images/generations",
            "/v1/images/generations",
            json!({"prompt": "doc"}),
        ),
        (
            "POST /v1/images/edits",
            "/v1/images/edits",
            json!({"prompt": "doc", "image": png}),
        ),
        (
            "POST /openai/images/generations",
            "/openai/images/generations",
            json!({"prompt": "doc", "async": true}),
        ),
        (
            "POST /openai/images/edits",
            "/openai/images/edits",
            json!({"prompt": "doc", "image": png, "async": true}),
        ),
        (
            "POST /v1/models/{id}",
            "/v1/models/gemini-2.5-flash-image:generateContent",
            contents.clone(),
        ),
        (
            "POST /v1beta/models/{target}",
            "/v1beta/models/gemini-2.5-flash-image:generateContent",
            contents,
        ),
    ];
    for (route, path, body) in dialects {
        assert!(served.contains(route), "{route}");
        let response = app
            .client
            .post(format!("{}{path}", app.address))
            .header("authorization", format!("Bearer {}", app.token))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{route}");
    }
    for route in ["GET /v1/models", "GET /v1/models/{id}"] {
        let path = route
            .split_once(' ')
            .unwrap()
            .1
            .replace("{id}", "nano-banana");
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .header("authorization", format!("Bearer {}", app.token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{route}");
    }
    let probed = |route: &str| route.contains(" /v1") || route.contains(" /openai/");
    for route in served
        .iter()
        .filter(|r| !r.contains(" /admin/") && !probed(r))
    {
        let (method, path) = route.split_once(' ').unwrap();
        let response = if method == "GET" {
            app.get(&path.replace("{key}", &key)).await
        } else {
            app.client
                .post(format!("{}{path}", app.address))
                .header("authorization", format!("Bearer {}", app.token))
                .body(json!({"prompt": "doc", "async": true, "id": "x"}).to_string())
                .send()
                .await
                .unwrap()
        };
        assert_eq!(response.status(), 200, "{route}");
    }

    // Every error code the server can send is in the document's enum.
    let codes: Vec<&str> = doc["components"]["schemas"]["ErrorBody"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for code in [
        "no_token",
        "bad_request",
        "disabled",
        "api_not_implemented",
        "invalid_token",
        "token_expired",
        "token_mismatched",
        "used_up",
        "forbidden",
        "no_api",
        "request_too_large",
        "too_many_requests",
        "api_error",
    ] {
        assert!(codes.contains(&code), "{code}");
    }
    // The enum's names, without the `null` it also admits (null counts as absent).
    let models: Vec<Value> =
        doc["components"]["schemas"]["ImagesRequest"]["properties"]["model"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|model| !model.is_null())
            .cloned()
            .collect();
    assert_eq!(models.len(), nano_banana::domain::Model::all().count());
    for model in nano_banana::domain::Model::all() {
        assert!(models.contains(&json!(model.name())), "{}", model.name());
    }
}

// What schemathesis (scripts/schemathesis.sh) found, each kept fixed here.

/// A whole number sent as `2.0` is the same JSON number as `2`, and the document's `integer`
/// admits it: `count`, `output_compression`, OpenAI's `n` and the admin API's numbers take it.
#[tokio::test]
async fn whole_numbers_written_with_a_fraction_are_integers() {
    let app = crate::helpers::spawn_app_with(|c| c.admin_key = Some("k".into())).await;
    let made = app
        .post_images(json!({"prompt": "x", "count": 2.0, "output_compression": 50.0}))
        .await;
    assert_eq!(made.status, 200, "{}", made.body);
    assert_eq!(made.body["data"].as_array().unwrap().len(), 2);
    let openai = app
        .post(
            "/v1/images/generations",
            Some(&app.token),
            json!({"prompt": "x", "n": 1.0, "output_compression": 9.0}).to_string(),
        )
        .await;
    assert_eq!(openai.status, 200, "{}", openai.body);
    let created = app
        .admin(
            reqwest::Method::POST,
            "/admin/apps",
            Some(json!({"name": "floats", "credits": 5.0, "max_concurrent": 2.0})),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.body["credits"], 5);
    let id = created.body["id"].as_str().unwrap();
    let topped = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/apps/{id}/topup"),
            Some(json!({"credits": 7.0})),
        )
        .await;
    assert_eq!(topped.body["credits"], 12, "{}", topped.body);
    let half = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/apps/{id}/topup"),
            Some(json!({"credits": 7.5})),
        )
        .await;
    crate::helpers::assert_error(&half, 400, "bad_request");
}

/// A top-up past 2^53 - 1 used to overflow `credits + n`: SQLite stored a float that no later
/// read of the application survived (every `GET /admin/apps` answered 500), PostgreSQL failed
/// the top-up with 500. Now a balance is capped, and passing the cap is `bad_request`.
#[tokio::test]
async fn a_balance_is_capped_and_a_top_up_past_it_is_refused() {
    const MAX: i64 = 9_007_199_254_740_991;
    let app = crate::helpers::spawn_app_with(|c| c.admin_key = Some("k".into())).await;
    let over = app
        .admin(
            reqwest::Method::POST,
            "/admin/apps",
            Some(json!({"name": "rich", "credits": MAX + 1})),
        )
        .await;
    crate::helpers::assert_error(&over, 400, "bad_request");
    let created = app
        .admin(
            reqwest::Method::POST,
            "/admin/apps",
            Some(json!({"name": "rich", "credits": MAX - 10})),
        )
        .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    for credits in [json!(11), json!(MAX), json!(i64::MAX)] {
        let refused = app
            .admin(
                reqwest::Method::POST,
                &format!("/admin/apps/{id}/topup"),
                Some(json!({ "credits": credits })),
            )
            .await;
        crate::helpers::assert_error(&refused, 400, "bad_request");
    }
    let topped = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/apps/{id}/topup"),
            Some(json!({"credits": 10})),
        )
        .await;
    assert_eq!(topped.body["credits"], MAX, "{}", topped.body);
    assert_eq!(topped.body["ledger_sum"], MAX, "{}", topped.body);
    let listed = app.admin(reqwest::Method::GET, "/admin/apps", None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let missing = app
        .admin(
            reqwest::Method::POST,
            "/admin/apps/no-such-app/topup",
            Some(json!({"credits": 1})),
        )
        .await;
    crate::helpers::assert_error(&missing, 404, "no_api");
}

/// A query string axum cannot read (a parameter given twice) was answered in axum's plain text;
/// now in the route's own error format.
#[tokio::test]
async fn an_unreadable_query_is_answered_in_the_routes_error_format() {
    let app = crate::helpers::spawn_app_with(|c| c.admin_key = Some("k".into())).await;
    let tokens = app
        .admin(
            reqwest::Method::GET,
            "/admin/tokens?application_id=a&application_id=b",
            None,
        )
        .await;
    crate::helpers::assert_error(&tokens, 400, "bad_request");
    crate::helpers::assert_trace_id(&tokens);
    let response = app
        .client
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash-image:streamGenerateContent?alt=sse&alt=sse",
            app.address
        ))
        .header("x-goog-api-key", &app.token)
        .json(&json!({"contents": [{"parts": [{"text": "x"}]}]}))
        .send()
        .await
        .unwrap();
    let google = answer(response).await;
    assert_eq!(google.status, 400, "{}", google.body);
    assert_eq!(
        google.body["error"]["status"], "INVALID_ARGUMENT",
        "{}",
        google.body
    );
}
