"""schemathesis hooks for scripts/schemathesis.sh (loaded by schemathesis.toml's `hooks`).

One hook: `filter_failure` drops exactly four kinds of "schema-valid request rejected" (ST202),
each a 400 that the contract, our documented design or HTTP itself requires and that no JSON
Schema can foresee, and one kind of "schema-violating request accepted" (ST201) that cannot be
sent at all (the last item). Every other failure, of every check, stays.

- An input image that cannot be read. The contract answers an edit whose image is unreadable
  400 `bad_request` naming the input ("image_urls[0] cannot be used: …", "image[0] is not an
  image: …"; the mask likewise). The fuzzer invents image URLs (`"0"`, `http://x/`) and
  uploads (random bytes) that fit the schema but hold no image, and the run has no network: a
  schema can say "a URL" or "a file", never "one that holds an image".
- An `Idempotency-Key` sent again with another body. The fuzzer reuses one drawn header value
  across different bodies; our documented answer to that is 400 `bad_request` (README,
  openapi.json), so a retry can never be mistaken for a new request.
- A top-up past the balance cap. A balance is at most 2^53 - 1 (openapi.json); the stateful
  phase tops one application up again and again with large drawn amounts until it would pass
  that, which is state, not shape: each request alone fits the schema.
- A multipart body with a part named with control characters or a quote. The form admits
  unknown parts (the server ignores them), so the fuzzer invents part names; it writes them raw
  into the part's `Content-Disposition` header, which cannot carry those characters (RFC 7578),
  and the server rightly finds the body unreadable.
- (ST201) A multipart text part "of the wrong type". Every part of a multipart body is text: a
  part the fuzzer made an object or a number to break the schema's `type: string` arrives as
  the text of its JSON, a string like any other, and is rightly taken. Only `type` mutations of
  multipart bodies are dropped; a value outside a part's enum or pattern still has to be refused.
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
    r"|^credits: a balance can be at most \d+\.$"
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


def _untyped_multipart_part(failure, case) -> bool:
    return (
        failure.code == "ST201"
        and str(case.media_type or "").startswith("multipart/form-data")
        and "violates `type`" in failure.message
    )


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if _untyped_multipart_part(failure, case):
        return False
    if failure.code != "ST202" or response.status_code != 400:
        return True
    message = _message(response)
    explained = EXPLAINED.search(message) is not None or _unsendable_multipart(case, message)
    return not explained
