use serde_json::json;

use super::*;
use crate::domain::{Action, Model, RequestLimits};

fn named(name: &str) -> Option<Model> {
    match name {
        "gemini-2.5-flash-image" => Model::parse("nano-banana"),
        "gemini-3-pro-image" => Model::parse("nano-banana-pro"),
        other => Model::parse(other),
    }
}

fn parse_for(model: &str, body: Value) -> Result<GeminiRequest, Invalid> {
    let limits = RequestLimits::default();
    let names = vec![
        "nano-banana".to_owned(),
        "gemini-2.5-flash-image".to_owned(),
    ];
    let context = Context {
        limits: &limits,
        max_image_bytes: 1 << 20,
        model_named: &named,
        model_names: &names,
    };
    parse(model, &body, &context)
}

#[test]
fn a_text_prompt_is_a_generation() {
    let parsed = parse_for(
        "gemini-3-pro-image",
        json!({"contents": [{"role": "user", "parts": [{"text": "a lemon"}]}],
               "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                                    "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"}}}),
    )
    .unwrap();
    assert_eq!(
        parsed.translated.body,
        json!({"action": "generate", "prompt": "a lemon", "model": "nano-banana-pro",
               "aspect_ratio": "16:9", "resolution": "2K", "via": "generateContent"})
    );
    assert_eq!(parsed.model_version, "gemini-3-pro-image");
}

#[test]
fn inline_images_in_either_spelling_and_alphabet_make_an_edit() {
    let parsed = parse_for(
        "gemini-2.5-flash-image",
        json!({"contents": [
            {"role": "user", "parts": [{"inline_data": {"mime_type": "image/png", "data": "ab-_"}},
                                       {"text": "old prompt"}]},
            {"role": "model", "parts": [{"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}},
                                        {"text": "thinking", "thought": true}]},
            {"role": "user", "parts": [{"text": "make it blue"},
                                       {"fileData": {"fileUri": "https://example.com/x.png",
                                                     "mimeType": "image/png"}}]}
        ]}),
    )
    .unwrap();
    let request = &parsed.translated.request;
    assert_eq!(request.action, Action::Edit);
    assert_eq!(request.prompt, "make it blue");
    assert_eq!(
        request.image_urls,
        [
            "data:image/png;base64,ab+/",
            "data:image/jpeg;base64,AAAA",
            "https://example.com/x.png"
        ]
    );
}

#[test]
fn the_system_instruction_leads_the_prompt() {
    let parsed = parse_for(
        "nano-banana",
        json!({"systemInstruction": {"parts": [{"text": "Always watercolour."}]},
               "contents": {"parts": [{"text": "a boat"}]}}),
    )
    .unwrap();
    assert_eq!(
        parsed.translated.request.prompt,
        "Always watercolour.\n\na boat"
    );
}

#[test]
fn what_google_refuses_is_refused() {
    let error = parse_for(
        "gemini-2.5-flash-image",
        json!({"contents": [{"parts": [{"text": "x"}]}],
               "generationConfig": {"candidateCount": 2}}),
    )
    .unwrap_err();
    assert_eq!(
        error.message,
        "Multiple candidates is not enabled for models/gemini-2.5-flash-image"
    );
    let cases = [
        json!({}),
        json!({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "AA"}}]}]}),
        json!({"contents": [{"parts": [{"text": "x"}]}],
               "generationConfig": {"responseModalities": ["TEXT"]}}),
        json!({"contents": [{"parts": [{"text": "x"}]}],
               "generationConfig": {"imageConfig": {"aspectRatio": "21:9"}}}),
        json!({"contents": [{"parts": [{"text": "x"}]}],
               "generationConfig": {"imageConfig": {"imageSize": "8K"}}}),
        json!({"contents": [{"parts": [{"text": "x"},
                                       {"fileData": {"fileUri": "gs://bucket/x.png"}}]}]}),
        json!({"contents": [{"parts": [{"text": "x"}, {"inlineData": {"data": "AA"}}]}]}),
    ];
    for body in cases {
        assert!(parse_for("nano-banana", body.clone()).is_err(), "{body}");
    }
    let error = parse_for(
        "imagen-4",
        json!({"contents": [{"parts": [{"text": "x"}]}]}),
    )
    .unwrap_err();
    assert!(error.message.contains("imagen-4"), "{}", error.message);
    // 2K on a 1K-only model: the contract's own refusal.
    let error = parse_for(
        "gemini-2.5-flash-image",
        json!({"contents": [{"parts": [{"text": "x"}]}],
               "generationConfig": {"imageConfig": {"imageSize": "2K"}}}),
    )
    .unwrap_err();
    assert!(
        error.message.contains("accepts only 1K"),
        "{}",
        error.message
    );
}

#[test]
fn answers_carry_the_image_inline_and_refusals_say_image_safety() {
    let made = [Made {
        mime_type: "image/png".into(),
        bytes: Bytes::from_static(b"png!"),
    }];
    let answer = answer("gemini-2.5-flash-image", "task-1", &made);
    assert_eq!(
        answer["candidates"][0]["content"]["parts"][0]["inlineData"],
        json!({"mimeType": "image/png", "data": "cG5nIQ=="})
    );
    assert_eq!(answer["candidates"][0]["finishReason"], "STOP");
    assert_eq!(answer["responseId"], "task-1");
    assert_eq!(answer["modelVersion"], "gemini-2.5-flash-image");
    let refused = refused("m", "t");
    assert_eq!(refused["candidates"][0]["finishReason"], "IMAGE_SAFETY");
    assert!(refused["candidates"][0].get("content").is_none());
}

#[test]
fn contract_errors_take_google_s_statuses() {
    let body = |code: ErrorCode| error_body(&ApiError::new(code, "m"));
    assert_eq!(
        body(ErrorCode::BadRequest),
        (
            400,
            json!({"error": {"code": 400, "message": "m", "status": "INVALID_ARGUMENT"}})
        )
    );
    assert_eq!(body(ErrorCode::InvalidToken).0, 400);
    assert_eq!(body(ErrorCode::NoToken).0, 403);
    assert_eq!(
        body(ErrorCode::UsedUp).1["error"]["status"],
        "RESOURCE_EXHAUSTED"
    );
    assert_eq!(body(ErrorCode::TooManyRequests).0, 429);
    assert_eq!(body(ErrorCode::ApiNotImplemented).0, 404);
    assert_eq!(body(ErrorCode::ApiError).0, 500);
}
