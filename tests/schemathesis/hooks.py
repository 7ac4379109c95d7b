"""schemathesis hooks for scripts/schemathesis.sh (loaded by schemathesis.toml's `hooks`).

One hook: `filter_failure` drops exactly three kinds of "schema-valid request rejected" (ST202),
each a 400 that the contract, our documented design or HTTP itself requires and that no JSON
Schema can foresee. Every other failure, of every check, stays.

- An input image that cannot be read. The contract answers an edit whose image is unreadable
  400 `bad_request` naming the input ("image_urls[0] cannot be used: …", "image[0] is not an
  image: …"; the mask likewise). The fuzzer invents image URLs (`"0"`, `http://x/`) and
  uploads (random bytes) that fit the schema but hold no image, and the run has no network: a
  schema can say "a URL" or "a file", never "one that holds an image".
- An `Idempotency-Key` sent again with another body. The fuzzer reuses one drawn header value
  across different bodies; our documented answer to that is 400 `bad_request` (README,
  openapi.json), so a retry can never be mistaken for a new request.
- A multipart body with a part named with control characters or a quote. The form admits
  unknown parts (the server ignores them), so the fuzzer invents part names; it writes them raw
  into the part's `Content-Disposition` header, which cannot carry those characters (RFC 7578),
  and the server rightly finds the body unreadable.
"""

import json
import re

import schemathesis

# The messages of those two answers, in the contract's body and in OpenAI's (same `message`).
EXPLAINED = re.compile(
    r"^(?:(?:image_urls|image|images)\[\d+\]|mask) cannot be used: "
    r"|^image(?:\[\d+\])? is not an image: "
    r"|^image(?:\[\d+\])? is empty\.$"
    r"|^mask must be a PNG "
    r"|^Idempotency-Key was already used with a different request body\.$"
)


def _message(response) -> str:
    try:
        body = json.loads(response.content)
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return ""


UNSENDABLE_PART_NAME = re.compile(r'[\x00-\x1f\x7f"]')


def _unsendable_multipart(case, message: str) -> bool:
    return (
        message.startswith("The multipart body could not be read: ")
        and isinstance(case.body, dict)
        and any(UNSENDABLE_PART_NAME.search(str(name)) for name in case.body)
    )


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if failure.code != "ST202" or response.status_code != 400:
        return True
    message = _message(response)
    explained = EXPLAINED.search(message) is not None or _unsendable_multipart(case, message)
    return not explained
