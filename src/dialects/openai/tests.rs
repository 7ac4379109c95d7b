use serde_json::json;

use super::*;
use crate::domain::{Action, RequestLimits};

fn names() -> Vec<String> {
    ["nano-banana", "nano-banana-pro", "gemini-3-pro-image"]
        .map(String::from)
        .to_vec()
}

fn named(name: &str) -> Option<Model> {
    match name {
        "gemini-3-pro-image" => Model::parse("nano-banana-pro"),
        other => Model::parse(other),
    }
}

fn parse_json(operation: Operation, body: Value) -> Result<OpenAiRequest, Invalid> {
    parse_with(operation, Form::OpenAi, body, Uploads::default())
}

fn parse_with(
    operation: Operation,
    form: Form,
    body: Value,
    uploads: Uploads,
) -> Result<OpenAiRequest, Invalid> {
    let limits = RequestLimits::default();
    let names = names();
    let context = Context {
        limits: &limits,
        max_image_bytes: 1000,
        model_named: &named,
        model_names: &names,
    };
    let Value::Object(fields) = body else {
        panic!("an object")
    };
    parse(operation, form, &fields, uploads, &context)
}

fn png(width: u32, height: u32) -> Bytes {
    let mut out = Vec::new();
    image::DynamicImage::new_rgba8(width, height)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    Bytes::from(out)
}

#[test]
fn a_generation_becomes_the_contract_request() {
    let parsed = parse_json(
        Operation::Generations,
        json!({"prompt": "a lemon", "n": 2, "size": "1536x1024", "model": null,
               "user": "u-1", "quality": "auto", "style": "vivid"}),
    )
    .unwrap();
    assert_eq!(
        parsed.translated.body,
        json!({"action": "generate", "prompt": "a lemon", "model": "nano-banana", "count": 2,
               "aspect_ratio": "3:2", "resolution": "1K", "user": "u-1",
               "via": "/v1/images/generations"})
    );
    let request = &parsed.translated.request;
    assert_eq!(request.count, 2);
    assert_eq!(parsed.answering.response_format, ResponseFormat::B64Json);
    assert_eq!(parsed.answering.output_format, OutputFormat::Png);
    // nano-banana makes 1248x832 for 3:2.
    assert_eq!(
        parsed.answering.size,
        Some(Model::default().pixel_size(AspectRatio::R3x2, Resolution::R1K))
    );
}

#[test]
fn sizes_pick_the_nearest_ratio_and_a_resolution_by_the_long_side() {
    assert_eq!(resolution_for(1024, 1024), Some(Resolution::R1K));
    assert_eq!(resolution_for(1024, 1536), Some(Resolution::R1K));
    assert_eq!(resolution_for(2048, 2048), Some(Resolution::R2K));
    assert_eq!(resolution_for(3840, 2160), Some(Resolution::R4K));
    assert_eq!(resolution_for(6145, 100), None);
    let pro = |size: &str| {
        let parsed = parse_json(
            Operation::Generations,
            json!({"prompt": "x", "model": "gemini-3-pro-image", "size": size}),
        )
        .unwrap();
        let body = parsed.translated.body;
        (body["aspect_ratio"].clone(), body["resolution"].clone())
    };
    assert_eq!(pro("3840x2160"), (json!("16:9"), json!("4K")));
    assert_eq!(pro("1000x1333"), (json!("3:4"), json!("1K")));
    assert_eq!(pro("2048x2048"), (json!("1:1"), json!("2K")));
}

#[test]
fn a_size_the_model_cannot_make_is_an_error_never_a_silent_1k() {
    let error = parse_json(
        Operation::Generations,
        json!({"prompt": "x", "size": "3840x2160"}),
    )
    .unwrap_err();
    assert_eq!(error.param.as_deref(), Some("size"));
    assert!(error.message.contains("makes only 1K"), "{}", error.message);
    for bad in ["big", "1024", "0x10", "12x-3", "10x10x10"] {
        let error =
            parse_json(Operation::Generations, json!({"prompt": "x", "size": bad})).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("size"), "{bad}");
    }
}

#[test]
fn quality_high_asks_for_2k_where_the_model_offers_it_and_our_fields_win() {
    let body = |extra: Value| {
        let mut body = json!({"prompt": "x", "model": "nano-banana-pro"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        parse_json(Operation::Generations, body)
            .unwrap()
            .translated
            .body
    };
    assert_eq!(body(json!({"quality": "high"}))["resolution"], "2K");
    assert_eq!(
        body(json!({"quality": "hd", "size": "3840x2160"}))["resolution"],
        "4K"
    );
    assert_eq!(body(json!({"quality": "low"}))["resolution"], "1K");
    assert_eq!(
        body(json!({"size": "1024x1024", "aspect_ratio": "16:9", "resolution": "2K"})),
        json!({"action": "generate", "prompt": "x", "model": "nano-banana-pro", "count": 1,
               "aspect_ratio": "16:9", "resolution": "2K", "via": "/v1/images/generations"})
    );
    // On a 1K-only model `high` is a preference that cannot be met: 1K, no error.
    let plain = parse_json(
        Operation::Generations,
        json!({"prompt": "x", "quality": "high"}),
    )
    .unwrap();
    assert_eq!(plain.translated.body["resolution"], "1K");
    assert_eq!(plain.answering.quality, "high");
}

#[test]
fn the_answer_s_quality_is_one_the_sdk_s_types_allow() {
    // openai's ImagesResponse.quality: low, medium, high, xhigh or max (strict validation
    // refuses DALL·E's standard and hd).
    for (asked, answered) in [
        (None, "medium"),
        (Some("auto"), "medium"),
        (Some("low"), "low"),
        (Some("medium"), "medium"),
        (Some("standard"), "medium"),
        (Some("high"), "high"),
        (Some("hd"), "high"),
    ] {
        let mut body = json!({"prompt": "x"});
        if let Some(asked) = asked {
            body["quality"] = asked.into();
        }
        let parsed = parse_json(Operation::Generations, body).unwrap();
        assert_eq!(parsed.answering.quality, answered, "quality {asked:?}");
    }
}

#[test]
fn every_bad_field_is_named() {
    let cases = [
        (json!({}), "prompt"),
        (json!({"prompt": " "}), "prompt"),
        (json!({"prompt": "x", "model": "dall-e-3"}), "model"),
        (json!({"prompt": "x", "n": 5}), "n"),
        (json!({"prompt": "x", "n": "two"}), "n"),
        (json!({"prompt": "x", "quality": "ultra"}), "quality"),
        (
            json!({"prompt": "x", "background": "transparent"}),
            "background",
        ),
        (
            json!({"prompt": "x", "response_format": "png"}),
            "response_format",
        ),
        (
            json!({"prompt": "x", "output_format": "gif"}),
            "output_format",
        ),
        (
            json!({"prompt": "x", "output_compression": 101}),
            "output_compression",
        ),
        (json!({"prompt": "x", "stream": "yes"}), "stream"),
        (json!({"prompt": 7}), "prompt"),
    ];
    for (body, param) in cases {
        let error = parse_json(Operation::Generations, body.clone()).unwrap_err();
        assert_eq!(error.param.as_deref(), Some(param), "{body}: {error:?}");
    }
    let unknown = parse_json(
        Operation::Generations,
        json!({"prompt": "x", "model": "dall-e-3"}),
    )
    .unwrap_err();
    assert!(
        unknown
            .message
            .contains("nano-banana, nano-banana-pro, gemini-3-pro-image"),
        "{}",
        unknown.message
    );
}

#[test]
fn multipart_fields_arrive_as_strings() {
    let parsed = parse_with(
        Operation::Edits,
        Form::OpenAi,
        json!({"prompt": "x", "n": "3", "stream": "true", "output_compression": "80",
               "output_format": "jpeg"}),
        Uploads {
            images: vec![png(4, 3), png(2, 2)],
            mask: Some(png(4, 3)),
        },
    )
    .unwrap();
    let request = &parsed.translated.request;
    assert_eq!(request.action, Action::Edit);
    assert_eq!(request.count, 3);
    assert!(parsed.answering.stream);
    assert_eq!(request.output.compression, Some(80));
    assert_eq!(request.output.format, Some(OutputFormat::Jpeg));
    assert_eq!(request.image_urls.len(), 2);
    assert!(request.image_urls[0].starts_with("data:image/png;base64,"));
    assert!(
        request
            .mask
            .as_deref()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
    // No size: the first upload's ratio (4:3).
    assert_eq!(
        parsed.answering.size,
        Some(Model::default().pixel_size(AspectRatio::R4x3, Resolution::R1K))
    );
}

#[test]
fn uploads_are_checked_for_count_size_and_type() {
    let edit = |uploads: Uploads| {
        parse_with(
            Operation::Edits,
            Form::OpenAi,
            json!({"prompt": "x"}),
            uploads,
        )
    };
    let big = Bytes::from(vec![0u8; 1001]);
    let error = edit(Uploads {
        images: vec![png(1, 1), big],
        mask: None,
    })
    .unwrap_err();
    assert!(error.too_large);
    assert_eq!(error.param.as_deref(), Some("image[1]"));
    let error = edit(Uploads {
        images: vec![png(1, 1); 17],
        mask: None,
    })
    .unwrap_err();
    assert!(error.message.contains("17 images"), "{}", error.message);
    let error = edit(Uploads {
        images: vec![png(1, 1), Bytes::from_static(b"just some text")],
        mask: None,
    })
    .unwrap_err();
    assert_eq!(error.param.as_deref(), Some("image[1]"));
    assert!(error.message.contains("not an image"), "{}", error.message);
    let error = edit(Uploads {
        images: vec![png(1, 1)],
        mask: Some(Bytes::from_static(b"GIF89a......")),
    })
    .unwrap_err();
    assert_eq!(error.param.as_deref(), Some("mask"));
    let error = edit(Uploads::default()).unwrap_err();
    assert_eq!(error.param.as_deref(), Some("image"));
}

#[test]
fn json_edits_take_urls_data_uris_and_image_url_objects() {
    let parsed = parse_json(
        Operation::Edits,
        json!({"prompt": "x", "image": "https://example.com/a.png"}),
    )
    .unwrap();
    assert_eq!(
        parsed.translated.request.image_urls,
        ["https://example.com/a.png"]
    );
    let parsed = parse_json(
        Operation::Edits,
        json!({"prompt": "x", "images": [{"image_url": "https://example.com/a.png"},
                                         "data:image/png;base64,AAAA"]}),
    )
    .unwrap();
    assert_eq!(parsed.translated.request.image_urls.len(), 2);
    let error = parse_json(Operation::Edits, json!({"prompt": "x", "image": [3]})).unwrap_err();
    assert_eq!(error.param.as_deref(), Some("image[0]"));
}

#[test]
fn the_original_form_keeps_callback_and_async_and_v1_ignores_them() {
    let body = json!({"prompt": "x", "async": true, "callback_url": "https://example.com/hook"});
    let original = parse_with(
        Operation::Generations,
        Form::Original,
        body.clone(),
        Uploads::default(),
    )
    .unwrap();
    assert!(original.translated.request.answers_at_once());
    assert_eq!(
        original.translated.body["via"],
        "/openai/images/generations"
    );
    let v1 = parse_json(Operation::Generations, body).unwrap();
    assert!(!v1.translated.request.answers_at_once());
}

#[test]
fn answers_and_events_have_openai_s_fields() {
    let parsed = parse_json(
        Operation::Edits,
        json!({"prompt": "x", "image": "https://example.com/a.png", "response_format": "url"}),
    )
    .unwrap();
    let made = [Made {
        url: "http://h/images/a.png".into(),
        bytes: None,
    }];
    let answer = answer(&parsed.answering, 1700000000, &made);
    assert_eq!(answer["created"], 1700000000);
    assert_eq!(answer["data"], json!([{"url": "http://h/images/a.png"}]));
    assert_eq!(answer["output_format"], "png");
    assert_eq!(answer["usage"]["total_tokens"], 0);
    assert!(
        answer.get("size").is_none(),
        "an edit without a size and bytes"
    );

    let with_bytes = [Made {
        url: "http://h/images/a.png".into(),
        bytes: Some(png(6, 4)),
    }];
    let events = stream_events(&parsed.answering, 1, &with_bytes);
    assert_eq!(events[0]["type"], "image_edit.completed");
    assert_eq!(events[0]["size"], "6x4");
    assert!(events[0]["b64_json"].is_string());

    let error = stream_error(&ApiError::internal());
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "server_error");
}

#[test]
fn contract_errors_take_openai_s_statuses_and_types() {
    let status = |code: ErrorCode| error_body(&ApiError::new(code, "m"), None).0;
    assert_eq!(status(ErrorCode::NoToken), 401);
    assert_eq!(status(ErrorCode::InvalidToken), 401);
    assert_eq!(status(ErrorCode::Disabled), 403);
    assert_eq!(status(ErrorCode::BadRequest), 400);
    assert_eq!(status(ErrorCode::RequestTooLarge), 413);
    assert_eq!(status(ErrorCode::UsedUp), 429);
    assert_eq!(status(ErrorCode::TooManyRequests), 429);
    assert_eq!(status(ErrorCode::Forbidden), 400);
    assert_eq!(status(ErrorCode::ApiError), 500);
    let (_, body) = error_body(&ApiError::new(ErrorCode::UsedUp, "no credits"), None);
    assert_eq!(
        body,
        json!({"error": {"message": "no credits", "type": "insufficient_quota", "param": null,
                         "code": "insufficient_quota"}})
    );
    let (_, body) = error_body(&ApiError::bad_request("bad n"), Some("n"));
    assert_eq!(body["error"]["param"], "n");
}
