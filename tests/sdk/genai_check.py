"""The official `google-genai` Python SDK (pinned in requirements.txt) against the real server,
pointed at it by base URL alone. Run by tests/api/sdk.rs; the settings are read from the
environment (see common.py). Prints one line per check passed; exits 1 at the first failure,
naming it."""

import asyncio

from google import genai
from google.genai import errors, types

from common import Server, check, expect, make_png, png_size, run_checks

server = Server()

MODEL = "gemini-2.5-flash-image"
IMAGE_ONLY = types.GenerateContentConfig(response_modalities=["IMAGE"])


_clients = []


def client(token: str = server.token, root: str = server.root, api_version="v1beta") -> genai.Client:
    # vertexai=False: never the Vertex AI dialect, whatever the environment says. No
    # retry_options: the SDK makes one attempt. The timeout is in milliseconds.
    options = types.HttpOptions(base_url=root, timeout=60_000)
    if api_version is not None:
        options.api_version = api_version
    made = genai.Client(vertexai=False, api_key=token, http_options=options)
    # A Client closes its connections when it is garbage-collected, even in the middle of
    # `client().models.generate_content(…)`: keep every one alive until the script ends.
    _clients.append(made)
    return made


def images_of(response) -> list:
    """The images of a response's parts, each checked to be a PNG; the list of their sizes."""
    parts = response.parts or []
    inline = [part.inline_data for part in parts if part.inline_data is not None]
    for blob in inline:
        expect(blob.mime_type == "image/png", f"mime_type {blob.mime_type!r}")
    return [png_size(blob.data) for blob in inline]


def client_error(call, code: int):
    """Runs `call`, which must raise errors.ClientError with this HTTP status; returns it."""
    try:
        call()
    except errors.ClientError as error:
        expect(error.code == code, f"code {error.code}, not {code}: {error}")
        return error
    raise AssertionError("no exception")


@check("generate_content returns one PNG inline_data part (16:9 is 1344x768)")
def generate_content():
    config = types.GenerateContentConfig(
        response_modalities=["IMAGE"], image_config=types.ImageConfig(aspect_ratio="16:9")
    )
    response = client().models.generate_content(model=MODEL, contents="a banana", config=config)
    expect(images_of(response) == [(1344, 768)], f"images: {images_of(response)}")
    candidate = response.candidates[0]
    expect(candidate.finish_reason == types.FinishReason.STOP, f"finish_reason {candidate.finish_reason}")
    expect(response.model_version == MODEL, f"model_version {response.model_version!r}")
    expect(bool(response.response_id), f"response_id {response.response_id!r}")
    expect(response.usage_metadata is not None, "usage_metadata")


@check("the SDK's default api_version (v1) works too")
def default_api_version():
    response = client(api_version=None).models.generate_content(
        model=MODEL, contents="a banana", config=IMAGE_ONLY
    )
    expect(images_of(response) == [(1024, 1024)], f"images: {images_of(response)}")


@check("an edit with an inline image (Part.from_bytes) returns an image")
def edit_inline_image():
    photo = make_png(48, 32, lambda x, y: (x * 5, y * 7, 90, 255))
    response = client().models.generate_content(
        model=MODEL,
        contents=["make it blue", types.Part.from_bytes(data=photo, mime_type="image/png")],
        config=types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"]),
    )
    # No aspect ratio asked: the edit follows its input (3:2).
    expect(images_of(response) == [(1248, 832)], f"images: {images_of(response)}")


@check("generate_content_stream yields one chunk with the image")
def generate_content_stream():
    chunks = list(
        client().models.generate_content_stream(model=MODEL, contents="a banana", config=IMAGE_ONLY)
    )
    expect(len(chunks) == 1, f"{len(chunks)} chunks")
    expect(images_of(chunks[0]) == [(1024, 1024)], f"images: {images_of(chunks[0])}")
    expect(chunks[0].candidates[0].finish_reason == types.FinishReason.STOP, "finish_reason STOP")


@check("the async client (client.aio) works too")
def async_generate_content():
    async def generate():
        return await client().aio.models.generate_content(model=MODEL, contents="a banana")

    response = asyncio.run(generate())
    expect(images_of(response) == [(1024, 1024)], f"images: {images_of(response)}")


@check("a wrong key is errors.ClientError 400 INVALID_ARGUMENT, as Google answers")
def wrong_key():
    error = client_error(
        lambda: client(token="nb-not-a-real-token").models.generate_content(model=MODEL, contents="x"),
        400,
    )
    expect(error.status == "INVALID_ARGUMENT", f"status {error.status!r}")


@check("a bad parameter is errors.ClientError 400")
def bad_parameter():
    config = types.GenerateContentConfig(image_config=types.ImageConfig(aspect_ratio="7:1"))
    error = client_error(
        lambda: client().models.generate_content(model=MODEL, contents="x", config=config), 400
    )
    expect("aspectRatio" in (error.message or ""), f"message {error.message!r}")


@check('candidate_count=2 is errors.ClientError 400 "Multiple candidates is not enabled"')
def candidate_count():
    config = types.GenerateContentConfig(candidate_count=2)
    error = client_error(
        lambda: client().models.generate_content(model=MODEL, contents="x", config=config), 400
    )
    expect(error.status == "INVALID_ARGUMENT", f"status {error.status!r}")
    message = error.message or ""
    expect(message.startswith("Multiple candidates is not enabled"), f"message {message!r}")


@check("an error on a stream is errors.ClientError too")
def stream_error():
    config = types.GenerateContentConfig(candidate_count=2)
    client_error(
        lambda: list(client().models.generate_content_stream(model=MODEL, contents="x", config=config)),
        400,
    )


@check("out of credits is errors.ClientError 429 RESOURCE_EXHAUSTED")
def out_of_credits():
    error = client_error(
        lambda: client(token=server.broke_token).models.generate_content(model=MODEL, contents="x"),
        429,
    )
    expect(error.status == "RESOURCE_EXHAUSTED", f"status {error.status!r}")


@check("a safety refusal is finish_reason IMAGE_SAFETY with no parts")
def safety_refusal():
    response = client(root=server.refusing_root).models.generate_content(
        model=MODEL, contents="a banana [fake:image_safety]", config=IMAGE_ONLY
    )
    candidate = response.candidates[0]
    expect(candidate.finish_reason == types.FinishReason.IMAGE_SAFETY,
           f"finish_reason {candidate.finish_reason}")
    expect(response.parts is None, f"parts {response.parts!r}")


if __name__ == "__main__":
    from importlib.metadata import version

    run_checks(f"google-genai {version('google-genai')}")
