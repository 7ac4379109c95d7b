"""The official `openai` Python SDK (pinned in requirements.txt) against the real server, pointed at
it by base URL alone. Run by tests/api/sdk.rs; the settings are read from the environment (see
common.py). Prints one line per check passed; exits 1 at the first failure, naming it."""

import base64

import openai

from common import Server, check, download, expect, make_png, png_pixels, png_size, run_checks

server = Server()


def client(token: str = server.token, root: str = server.root, **options) -> openai.OpenAI:
    # No retries: a test must see the first answer, not the third. Strict validation: every
    # answer and event must match the SDK's types exactly (by default it accepts anything).
    options.setdefault("max_retries", 0)
    return openai.OpenAI(
        api_key=token,
        base_url=f"{root}/v1",
        timeout=60,
        _strict_response_validation=True,
        **options,
    )


def decoded(b64: str) -> bytes:
    expect(isinstance(b64, str) and b64, f"a b64_json string expected, got {b64!r}")
    return base64.b64decode(b64, validate=True)


@check("models.list names our models")
def models_list():
    ids = [model.id for model in client().models.list()]
    for name in ("nano-banana", "gemini-2.5-flash-image"):
        expect(name in ids, f"{name} is not among the models: {ids}")


@check("generate n=2 size=1536x1024 makes two 3:2 PNGs (1248x832)")
def generate_two_3x2():
    answer = client().images.generate(prompt="two bananas on a table", n=2, size="1536x1024")
    expect(isinstance(answer.created, int), f"created: {answer.created!r}")
    expect(answer.data is not None and len(answer.data) == 2, f"data: {answer.data!r}")
    for i, image in enumerate(answer.data):
        size = png_size(decoded(image.b64_json))
        expect(size == (1248, 832), f"image {i} is {size[0]}x{size[1]}, not 1248x832")
    expect(answer.size == "1248x832", f"size: {answer.size!r}")
    expect(answer.output_format == "png", f"output_format: {answer.output_format!r}")
    expect(answer.quality in ("low", "medium", "high"), f"quality: {answer.quality!r}")
    expect(answer.background in ("opaque", "transparent"), f"background: {answer.background!r}")
    expect(answer.usage is not None and isinstance(answer.usage.total_tokens, int),
           f"usage: {answer.usage!r}")


@check('response_format="b64_json" answers the image inline')
def generate_b64_json():
    answer = client().images.generate(prompt="a banana", response_format="b64_json")
    image = answer.data[0]
    expect(image.url is None, f"url: {image.url!r}")
    expect(png_size(decoded(image.b64_json)) == (1024, 1024), "a 1024x1024 PNG")


@check('response_format="url" answers a URL that downloads the image')
def generate_url():
    answer = client().images.generate(prompt="a banana", response_format="url", size="1024x1536")
    image = answer.data[0]
    expect(image.b64_json is None, "no b64_json with response_format=url")
    expect(isinstance(image.url, str) and image.url.startswith("http"), f"url: {image.url!r}")
    content_type, data = download(image.url)
    expect(content_type.startswith("image/png"), f"content-type: {content_type!r}")
    # 2:3 at 1K for nano-banana.
    expect(png_size(data) == (832, 1248), f"the download is {png_size(data)}, not 832x1248")


@check("edit with two uploaded files (image[]) and a mask keeps what the mask covers")
def edit_two_files_and_mask():
    first = make_png(64, 48, lambda x, y: (200, 30, 30, 255))
    second = make_png(40, 40, lambda x, y: (30, 30, 200, 255))
    # Transparent (may change) on the left half, opaque (keep) on the right half. Sent as raw
    # bytes: the SDK names the part "upload", application/octet-stream.
    mask = make_png(64, 48, lambda x, y: (0, 0, 0, 0 if x < 32 else 255))
    answer = client().images.edit(
        image=[("first.png", first, "image/png"), ("second.png", second, "image/png")],
        mask=mask,
        prompt="paint the left half green",
    )
    expect(answer.data is not None and len(answer.data) == 1, f"data: {answer.data!r}")
    width, height, rows = png_pixels(decoded(answer.data[0].b64_json))
    expect((width, height) == (64, 48), f"the edit is {width}x{height}, not the first image's 64x48")
    kept = {rows[y][x] for y in range(height) for x in range(32, width)}
    expect(kept == {(200, 30, 30, 255)}, f"where the mask is opaque the first image must stay: {kept}")
    changed = {rows[y][x] for y in range(height) for x in range(32)}
    expect(changed != {(200, 30, 30, 255)}, "where the mask is transparent the image must change")
    expect(answer.size == "64x48", f"size: {answer.size!r}")


@check('DALL-E\'s quality="hd" and "standard" answer a quality the SDK\'s types allow')
def dall_e_quality():
    for asked, answered in (("hd", "high"), ("standard", "medium")):
        answer = client().images.generate(prompt="a banana", quality=asked)
        expect(answer.quality == answered, f"quality {asked}: answered {answer.quality!r}")


@check("a mask of another size than the first image is openai.BadRequestError (400)")
def mask_of_another_size():
    image = make_png(64, 48, lambda x, y: (200, 30, 30, 255))
    mask = make_png(48, 48, lambda x, y: (0, 0, 0, 0))
    try:
        client().images.edit(image=image, mask=mask, prompt="x")
    except openai.BadRequestError as error:
        expect("mask" in error.message, f"message {error.message!r}")
        return
    raise AssertionError("no exception")


@check("generate stream=True sends image_generation.completed with a b64_json PNG")
def stream_generation():
    types, images = [], []
    with client().images.generate(prompt="a banana", size="1536x1024", stream=True) as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "image_generation.completed":
                images.append(decoded(event.b64_json))
                expect(isinstance(event.created_at, int), f"created_at: {event.created_at!r}")
                expect(event.usage is not None, "usage on the completed event")
    expect(types == ["image_generation.completed"], f"events: {types}")
    expect(png_size(images[0]) == (1248, 832), f"the streamed image is {png_size(images[0])}")


@check("edit stream=True sends image_edit.completed")
def stream_edit():
    image = make_png(32, 32, lambda x, y: (x * 8, y * 8, 100, 255))
    events = list(client().images.edit(image=("a.png", image, "image/png"), prompt="x", stream=True))
    expect([e.type for e in events] == ["image_edit.completed"], f"events: {[e.type for e in events]}")
    png_size(decoded(events[0].b64_json))


@check("a wrong key is openai.AuthenticationError (401)")
def wrong_key():
    try:
        client(token="nb-not-a-real-token").images.generate(prompt="a banana")
    except openai.AuthenticationError as error:
        expect(error.status_code == 401, f"status {error.status_code}")
        expect(error.code == "invalid_api_key", f"code {error.code!r}")
        return
    raise AssertionError("no exception")


@check("a bad parameter is openai.BadRequestError (400) naming it")
def bad_parameter():
    try:
        client().images.generate(prompt="a banana", size="huge")
    except openai.BadRequestError as error:
        expect(error.status_code == 400, f"status {error.status_code}")
        expect(error.param == "size", f"param {error.param!r}")
        expect(error.type == "invalid_request_error", f"type {error.type!r}")
        return
    raise AssertionError("no exception")


@check("an empty prompt is openai.BadRequestError (400)")
def empty_prompt():
    try:
        client().images.generate(prompt="")
    except openai.BadRequestError as error:
        expect(error.param == "prompt", f"param {error.param!r}")
        return
    raise AssertionError("no exception")


@check("out of credits is openai.RateLimitError (429, insufficient_quota), never retried")
def out_of_credits():
    requests = []
    http_client = openai.DefaultHttpxClient(event_hooks={"request": [requests.append]})
    # The SDK's default retries, to see that x-should-retry: false stops them.
    broke = client(token=server.broke_token, max_retries=2, http_client=http_client)
    try:
        broke.images.generate(prompt="a banana")
    except openai.RateLimitError as error:
        expect(error.status_code == 429, f"status {error.status_code}")
        expect(error.code == "insufficient_quota", f"code {error.code!r}")
        should_retry = error.response.headers.get("x-should-retry")
        expect(should_retry == "false", f"x-should-retry: {should_retry!r}")
        expect(len(requests) == 1, f"{len(requests)} requests were sent, not 1")
        return
    raise AssertionError("no exception")


@check("a prompt the upstream refuses is openai.BadRequestError (moderation_blocked)")
def refused():
    try:
        client(root=server.refusing_root).images.generate(prompt="a banana [fake:image_safety]")
    except openai.BadRequestError as error:
        expect(error.code == "moderation_blocked", f"code {error.code!r}")
        return
    raise AssertionError("no exception")


@check("a refusal after a stream has begun is openai.APIError (moderation_blocked)")
def refused_in_stream():
    try:
        with client(root=server.refusing_root).images.generate(
            prompt="a banana [fake:image_safety]", stream=True
        ) as stream:
            events = [event.type for event in stream]
    except openai.APIError as error:
        expect(error.code == "moderation_blocked", f"code {error.code!r}")
        return
    raise AssertionError(f"no exception; events: {events}")


if __name__ == "__main__":
    run_checks(f"openai {openai.__version__}")
