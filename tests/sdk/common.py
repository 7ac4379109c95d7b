"""What both SDK checks share: the server's settings from the environment, named checks that stop
at the first failure, and PNGs made and read with the standard library alone (no Pillow).

The scripts are run by tests/api/sdk.rs against the real server; run one by hand with
    NB_BASE_URL=http://127.0.0.1:PORT NB_TOKEN=… NB_BROKE_TOKEN=… NB_REFUSING_BASE_URL=… \
        python tests/sdk/openai_check.py
"""

import os
import struct
import sys
import traceback
import urllib.request
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def setting(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"FAIL setup: the environment variable {name} is not set (see tests/sdk/common.py)")
    return value


class Server:
    """Where the checks send their requests."""

    def __init__(self) -> None:
        # The root of the server under test, e.g. http://127.0.0.1:8080 (no /v1).
        self.root = setting("NB_BASE_URL").rstrip("/")
        # A token with credits.
        self.token = setting("NB_TOKEN")
        # A token whose application has no credits left.
        self.broke_token = setting("NB_BROKE_TOKEN")
        # A second server, whose upstream (a fake Gemini) refuses prompts tagged [fake:image_safety].
        self.refusing_root = setting("NB_REFUSING_BASE_URL").rstrip("/")


_checks = []


def check(name: str):
    """Registers a check; `run_checks` runs them in the order they were defined."""

    def register(function):
        _checks.append((name, function))
        return function

    return register


def run_checks(title: str) -> None:
    """Runs every check; prints `ok <name>` for each one that passes and exits 1 at the first
    failure, with the check's name, the error and its traceback on stderr."""
    for name, function in _checks:
        try:
            function()
        except BaseException as error:  # noqa: BLE001 - every failure must name its check
            if isinstance(error, KeyboardInterrupt):
                raise
            print(f"FAIL {title}: {name}: {type(error).__name__}: {error}", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            sys.stdout.flush()
            sys.exit(1)
        print(f"ok {title}: {name}", flush=True)
    print(f"{title}: all {len(_checks)} checks passed", flush=True)


def expect(condition: bool, message: str) -> None:
    """An assert that also runs under `python -O`."""
    if not condition:
        raise AssertionError(message)


# ----------------------------------------------------------------------------- PNG


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def make_png(width: int, height: int, pixel) -> bytes:
    """An 8-bit RGBA PNG whose pixel (x, y) is `pixel(x, y)`, a tuple (r, g, b, a)."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rows.extend(pixel(x, y))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(rows)))
        + _chunk(b"IEND", b"")
    )


def png_size(data: bytes) -> tuple:
    """(width, height) from a PNG's header; fails if `data` is not a PNG."""
    expect(isinstance(data, (bytes, bytearray)), f"image bytes expected, got {type(data).__name__}")
    expect(data[:8] == PNG_SIGNATURE, f"not a PNG: starts with {bytes(data[:16])!r}")
    expect(data[12:16] == b"IHDR", "a PNG whose first chunk is not IHDR")
    return struct.unpack(">II", data[16:24])


def png_pixels(data: bytes) -> tuple:
    """(width, height, rows) of an 8-bit, non-interlaced grey, RGB or RGBA PNG (what the server
    writes), each row a list of (r, g, b, a) tuples."""
    width, height = png_size(data)
    depth, colour, _, _, interlace = struct.unpack(">BBBBB", data[24:29])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    expect(depth == 8 and channels is not None and interlace == 0,
           f"a PNG this reader cannot decode: depth {depth}, colour type {colour}, interlace {interlace}")
    idat, at = bytearray(), 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind = data[at + 4:at + 8]
        if kind == b"IDAT":
            idat.extend(data[at + 8:at + 8 + length])
        at += 12 + length
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            upper_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - upper_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upper_left)
                predictor = left if pa <= pb and pa <= pc else (up if pb <= pc else upper_left)
                line[i] = (line[i] + predictor) & 0xFF
        previous = line
        pixels = []
        for x in range(width):
            px = tuple(line[x * channels:(x + 1) * channels])
            if channels == 1:
                px = (px[0], px[0], px[0], 255)
            elif channels == 2:
                px = (px[0], px[0], px[0], px[1])
            elif channels == 3:
                px = px + (255,)
            pixels.append(px)
        rows.append(pixels)
    return width, height, rows


def download(url: str) -> tuple:
    """(content type, bytes) of a GET."""
    with urllib.request.urlopen(url, timeout=30) as response:
        expect(response.status == 200, f"GET {url} answered {response.status}")
        return response.headers.get("content-type", ""), response.read()
