"""Images in a call's messages: checked, measured from their headers, and priced in tokens.

``read_image`` turns one image part as the caller sent it (``{"type": "image", "data": base64,
"mimeType": ...}``, MCP's image content, or ``{"type": "image", "url": ...}``) into an
``ImagePart``, or refuses it with an ``InvalidInput`` naming the field and what is allowed.
``image_tokens`` is the most input tokens that image may cost on a wire protocol: the budget
reserves that much before the call; the provider's usage says what it really cost afterwards.

Decisions:

- **Base64**: the standard alphabet (``+`` and ``/``), padded, as RFC 4648 section 4 defines it.
  Line breaks (``\\n``, ``\\r``) are removed first, since MIME encoders (and ``base64`` on the
  command line) wrap at 76 columns; the part keeps the unwrapped text, which every provider
  takes. Any other whitespace, or a character outside the alphabet, is refused; the URL-safe
  alphabet (``-`` and ``_``) is refused with a hint to convert.
- **Type**: the declared ``mimeType`` must be image/png, image/jpeg, image/gif or image/webp
  (case does not matter) and must be what the bytes are: their signature decides.
- **Size**: read from the header (PNG IHDR, JPEG SOFn, GIF logical screen, WebP VP8/VP8L/VP8X),
  from the format specifications, with no image library. An image whose header cannot be read
  is refused, as every provider would refuse it too; so a part with ``data`` always has
  ``width`` and ``height``.
- **URLs** are never fetched. http and https only, at most 8 KiB, no ``user:pass@`` (it would
  be handed to a provider). The type is the declared one, else guessed from the path's
  extension, else ``image/*`` (``UNKNOWN_TYPE``): an adapter whose wire needs a definite type
  for a URL says so. A ``data:`` URL is taken apart and checked as ``data``.

Estimates per image (``image_tokens``): upper bounds for the figures each provider documents
(as of 2026-12); the real count comes from the provider's usage afterwards. W x H in pixels;
"most" is what an image of unknown size (a URL) is reserved at.

| Protocol | Estimate for a W x H image | Most | Source |
|---|---|---|---|
| anthropic | the larger of min(W,1568)·min(H,1568)/750 (at most 1600) and ⌈min(W,2576)/28⌉·⌈min(H,2576)/28⌉ | 8464 | Anthropic, "Images and vision": W·H/750 after scaling to fit 1568 px and ~1.15 MP (~1600 at most); now one token per 28-px patch up to each model's native size, 2576 px on the long edge from Claude Opus 4.7 |
| openai | the larger of 85 + 170·tiles, tiles = ⌈min(short,768)/512⌉·⌈min(long,2048)/512⌉, and 2.46 per 32-px patch, at most 1536 patches; gpt-4o-mini (when named): 2833 + 5667·tiles | 3779 (48169 for gpt-4o-mini) | OpenAI, "Images and vision", calculating costs: high detail fits 2048 px, short side 768, 512-px tiles (GPT-4o, 4.1, 4.5, 5; o1/o3 count less); patch models at a multiple (gpt-4.1-mini 1.62, o4-mini 1.72, gpt-4.1-nano 2.46); gpt-4o-mini 2833 + 5667 a tile |
| gemini | the larger of 1120 and 258·⌈min(W,3072)/768⌉·⌈min(H,3072)/768⌉ | 4128 | Gemini API, "Token counts" and "Media resolution": 258 for an image within 384 px, else 258 a 768-px tile (2.x); Gemini 3's default (high) resolution 1120; Vertex AI: larger images scaled to fit 3072 px |
| ollama | 6404, whatever the size | 6404 | local models, no published rule: Llama 3.2 Vision's 4 tiles of 1601 (LLaVA 576, Gemma 3 256) |
| mock | 85 | 85 | a fixed figure for tests |
"""

from __future__ import annotations

import binascii
import math
import re
import struct
from typing import NoReturn
from urllib.parse import unquote_to_bytes, urlsplit

from .content import ImagePart
from .types import InvalidInput

__all__ = [
    "IMAGE_TYPES",
    "UNKNOWN_TYPE",
    "MAX_URL_CHARS",
    "MAX_SIDE_PX",
    "read_image",
    "image_tokens",
    "image_size",
    "readable_bytes",
]

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
"""The types every provider with vision takes (as bytes); anything else is refused."""
UNKNOWN_TYPE = "image/*"
"""The type of an image given by a URL whose type is neither declared nor in its extension."""
MAX_URL_CHARS = 8 * 1024
MAX_SIDE_PX = 100_000
"""More pixels a side than any real image a model could be sent: a header saying so is wrong."""

_ALLOWED_TYPES = ", ".join(IMAGE_TYPES)
_B64_BODY = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_EXTENSIONS = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp"}
_NAMES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WebP"}
# Formats a caller might send by mistake, by signature, to say what the bytes are.
_OTHER_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
    (b"<svg", "an SVG image (text)"),
    (b"<?xml", "an XML document (SVG?)"),
    (b"PK\x03\x04", "a ZIP archive"),
)


def read_image(*, data: str | None, url: str | None, mime_type: str | None, field: str,
               max_bytes: int) -> ImagePart:
    """One image part of a message, checked: its bytes (base64 ``data`` with its ``mime_type``)
    or a ``url`` (http/https, or a ``data:`` URL, which is checked as data).

    Raises ``InvalidInput`` naming ``field`` (e.g. ``messages[0].content[1]``) and what is
    allowed: both or neither of data and url; data that is not strict base64, is empty or larger
    than ``max_bytes`` decoded, whose type is missing, not one of ``IMAGE_TYPES`` or not what the
    bytes are, or whose header gives no plausible size; a URL that is not http(s), is longer
    than 8 KiB, holds credentials or characters a URL cannot hold."""
    if (data is None) == (url is None):
        raise InvalidInput(field, "an image needs exactly one of data and url",
                           allowed='{"type": "image", "data": "<base64>", "mimeType": "image/png"} '
                                   'or {"type": "image", "url": "https://..."}')
    if mime_type is not None and not isinstance(mime_type, str):
        raise InvalidInput(f"{field}.mimeType", "must be a string", allowed=_ALLOWED_TYPES)
    if data is not None:
        if not isinstance(data, str):
            raise InvalidInput(f"{field}.data", "must be a string of base64", allowed="standard base64")
        if mime_type is None:
            raise InvalidInput(f"{field}.mimeType", "is required with data", allowed=_ALLOWED_TYPES)
        return _read_data(data, _declared_type(mime_type, f"{field}.mimeType"), field=field,
                          where=f"{field}.data", max_bytes=max_bytes)
    if not isinstance(url, str):
        raise InvalidInput(f"{field}.url", "must be a string", allowed="an http or https URL")
    return _read_url(url, mime_type, field=field, max_bytes=max_bytes)


def _declared_type(mime_type: str, where: str) -> str:
    declared = mime_type.strip().lower()
    if declared in IMAGE_TYPES:
        return declared
    hint = " (did you mean image/jpeg?)" if declared in ("image/jpg", "image/pjpeg") else ""
    raise InvalidInput(where, f"{_quote(mime_type)} is not an image type taken here{hint}",
                       allowed=_ALLOWED_TYPES)


def _read_data(data: str, declared: str, *, field: str, where: str, max_bytes: int) -> ImagePart:
    if "\n" in data or "\r" in data:
        data = data.replace("\r", "").replace("\n", "")
    if not data:
        raise InvalidInput(where, "is empty: an image needs its bytes", allowed="standard base64")
    if len(data) % 4:
        _refuse_base64(data, where)
    # The decoded size from the text alone: an image far too large is refused before decoding.
    size = len(data) // 4 * 3 - (2 if data.endswith("==") else 1 if data.endswith("=") else 0)
    if size > max_bytes:
        raise InvalidInput(where, f"the image is {_sizes(size, max_bytes)} an image may be",
                           allowed=f"at most {readable_bytes(max_bytes)} decoded")
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)  # checks the alphabet and the padding
    except (binascii.Error, ValueError):
        _refuse_base64(data, where)
    if not raw:
        raise InvalidInput(where, "decodes to no bytes: an image needs its bytes", allowed="standard base64")
    actual = _sniff(raw)
    if actual is None:
        other = _what_else(raw)
        problem = (f"the bytes are {other}, not a PNG, JPEG, GIF or WebP image" if other else
                   "the bytes are not a PNG, JPEG, GIF or WebP image (they start with no image signature)")
        raise InvalidInput(where, problem, allowed=_ALLOWED_TYPES)
    if actual != declared:
        raise InvalidInput(f"{field}.mimeType", f"says {declared} but the bytes are a "
                                                f"{_NAMES[actual]} image ({actual})",
                           allowed=f"{actual} for these bytes")
    dims = image_size(raw, actual)
    if dims is None:
        raise InvalidInput(where, f"the bytes start like a {_NAMES[actual]} image but its header "
                                  "does not give its size (cut short or damaged)",
                           allowed=f"a complete {_NAMES[actual]} file")
    width, height = dims
    if not (0 < width <= MAX_SIDE_PX and 0 < height <= MAX_SIDE_PX):
        raise InvalidInput(where, f"the {_NAMES[actual]} header says {width} x {height} pixels, "
                                  "which no real image is",
                           allowed=f"1 to {MAX_SIDE_PX:,} pixels a side")
    return ImagePart(mime_type=actual, data=data, size_bytes=len(raw), width=width, height=height)


def _refuse_base64(data: str, where: str) -> NoReturn:
    """Why ``data`` is not strict base64, said as usefully as can be (only on the way out)."""
    if "-" in data or "_" in data:
        raise InvalidInput(where, "uses the URL-safe base64 alphabet (- and _)",
                           allowed="standard base64 (+ and /: replace - with + and _ with /)")
    if any(c.isspace() for c in data):
        raise InvalidInput(where, "holds whitespace other than line breaks",
                           allowed="standard base64, optionally wrapped in lines")
    if _B64_BODY.fullmatch(data) is None:
        raise InvalidInput(where, "holds characters that are not base64, or = before its end",
                           allowed="standard base64 (A-Z, a-z, 0-9, + and /, padded with =)")
    raise InvalidInput(where, f"is {len(data):,} characters long, not a multiple of 4 "
                              "(padding missing or text cut short)",
                       allowed="standard base64, padded with =")


def _sizes(size: int, limit: int) -> str:
    shown, most = readable_bytes(size), readable_bytes(limit)
    if shown == most:  # rounding would hide the difference
        shown, most = f"{size:,} bytes", f"{limit:,} bytes"
    return f"{shown}, more than the {most}"


def _read_url(url: str, mime_type: str | None, *, field: str, max_bytes: int) -> ImagePart:
    where = f"{field}.url"
    if url[:5].lower() == "data:":
        return _read_data_url(url, mime_type, field=field, max_bytes=max_bytes)
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(where, f"is {len(url):,} characters long",
                           allowed=f"a URL of at most {MAX_URL_CHARS:,} characters (8 KiB)")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidInput(where, "holds whitespace or control characters",
                           allowed="a URL with them percent-encoded (%20)")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        has_credentials = parts.username is not None or parts.password is not None
        parts.port  # noqa: B018 - read only to refuse a port that is not a number
    except ValueError:
        # Not echoed: the text may hold credentials that urlsplit could not tell apart.
        raise InvalidInput(where, "is not a URL that can be read (a bad host or port)",
                           allowed="an http or https URL") from None
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"{parts.scheme}:" if parts.scheme else "no scheme"
        raise InvalidInput(where, f"has {shown}", allowed="an http or https URL, or a data: URL")
    if has_credentials:
        raise InvalidInput(where, "holds credentials (user:password@), which would be sent to the "
                                  "provider", allowed="a URL without credentials")
    if not host:
        raise InvalidInput(where, "has no host", allowed="an http or https URL")
    if mime_type is not None:
        kind = _declared_type(mime_type, f"{field}.mimeType")
    else:
        path = parts.path.lower()
        kind = next((t for ext, t in _EXTENSIONS.items() if path.endswith(ext)), UNKNOWN_TYPE)
    return ImagePart(mime_type=kind, url=url)


def _read_data_url(url: str, mime_type: str | None, *, field: str, max_bytes: int) -> ImagePart:
    """``data:image/png;base64,....`` (RFC 2397): its type and its bytes, checked as data."""
    where = f"{field}.url"
    head, comma, body = url[5:].partition(",")
    params = [p.strip() for p in head.split(";")]
    if not comma or "base64" not in (p.lower() for p in params[1:]):
        raise InvalidInput(where, "is a data: URL that is not base64",
                           allowed="data:image/png;base64,<base64>")
    if not params[0]:
        raise InvalidInput(where, "is a data: URL without a type", allowed=_ALLOWED_TYPES)
    kind = _declared_type(params[0], where)
    if mime_type is not None and _declared_type(mime_type, f"{field}.mimeType") != kind:
        raise InvalidInput(f"{field}.mimeType", f"says {mime_type.strip().lower()} but the data: URL says {kind}",
                           allowed="one type, or mimeType left out")
    if "%" in body:  # a percent-encoded body is allowed by RFC 2397; base64 needs no escapes
        try:
            body = unquote_to_bytes(body).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidInput(where, "holds characters that are not base64", allowed="standard base64") from None
    return _read_data(body, kind, field=field, where=where, max_bytes=max_bytes)


def _sniff(raw: bytes) -> str | None:
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if raw.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if raw.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    return None


def _what_else(raw: bytes) -> str | None:
    head = raw[:16].lstrip()
    for signature, what in _OTHER_SIGNATURES:
        if head.startswith(signature):
            return what
    if raw[4:8] == b"ftyp":
        return "an ISO media file (HEIC, AVIF or video)"
    return None


def image_size(raw: bytes, mime_type: str) -> tuple[int, int] | None:
    """(width, height) in pixels from the header of ``raw``, an image of ``mime_type``; None
    when the header is cut short or not what its format's specification says."""
    try:
        if mime_type == "image/png":
            return _png_size(raw)
        if mime_type == "image/gif":
            return _gif_size(raw)
        if mime_type == "image/jpeg":
            return _jpeg_size(raw)
        if mime_type == "image/webp":
            return _webp_size(raw)
    except struct.error:
        return None
    return None


def _png_size(raw: bytes) -> tuple[int, int] | None:
    # PNG spec 5.2/11.2.2: the signature, then IHDR first: length, "IHDR", width, height (big-endian).
    if raw[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", raw, 16)
    return int(width), int(height)


def _gif_size(raw: bytes) -> tuple[int, int] | None:
    # GIF89a spec section 18: the logical screen descriptor follows the 6-byte header (little-endian).
    width, height = struct.unpack_from("<HH", raw, 6)
    return int(width), int(height)


_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg_size(raw: bytes) -> tuple[int, int] | None:
    # ITU T.81 annex B: after SOI, marker segments (0xFF, marker, 2-byte length counting itself)
    # until a start-of-frame SOFn, whose payload is precision, height, width (big-endian).
    at = 2
    end = len(raw)
    while at < end:
        if raw[at] != 0xFF:
            return None
        while at < end and raw[at] == 0xFF:  # fill bytes
            at += 1
        if at >= end:
            return None
        marker = raw[at]
        at += 1
        if marker in _STANDALONE_MARKERS:
            continue
        if marker in (0xD9, 0xDA):  # end of image, or the scan began with no frame header
            return None
        (length,) = struct.unpack_from(">H", raw, at)
        if length < 2:
            return None
        if marker in _SOF_MARKERS:
            height, width = struct.unpack_from(">HH", raw, at + 3)
            return int(width), int(height)
        at += length
    return None


def _webp_size(raw: bytes) -> tuple[int, int] | None:
    # WebP container spec (RIFF): the first chunk after "WEBP" is VP8 (lossy, RFC 6386 section 9.1),
    # VP8L (lossless, 14-bit sizes minus one) or VP8X (extended, 24-bit canvas sizes minus one).
    chunk = raw[12:16]
    if chunk == b"VP8 ":
        if raw[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack_from("<HH", raw, 26)
        return int(width) & 0x3FFF, int(height) & 0x3FFF
    if chunk == b"VP8L":
        if raw[20:21] != b"\x2f":
            return None
        (bits,) = struct.unpack_from("<I", raw, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        if len(raw) < 30:
            return None
        width = int.from_bytes(raw[24:27], "little") + 1
        height = int.from_bytes(raw[27:30], "little") + 1
        return width, height
    return None


# Token estimates (see the module docstring's table for the sources).
_ANTHROPIC_EDGE, _ANTHROPIC_PX_PER_TOKEN, _ANTHROPIC_MAX = 1568, 750, 1600
_ANTHROPIC_LARGE_EDGE, _ANTHROPIC_PATCH_PX = 2576, 28
_OPENAI_BASE, _OPENAI_TILE = 85, 170
_OPENAI_MINI_BASE, _OPENAI_MINI_TILE = 2833, 5667
_OPENAI_PATCH_PX, _OPENAI_PATCH_CAP, _OPENAI_PATCH_MULTIPLE = 32, 1536, 2.46
_GEMINI_TILE_TOKENS, _GEMINI_TILE_PX, _GEMINI_EDGE, _GEMINI_DEFAULT = 258, 768, 3072, 1120
_OLLAMA_TOKENS = 6404
_MOCK_TOKENS = 85
_LARGEST = 10 * MAX_SIDE_PX  # stands for "unknown": beyond every cap above


def image_tokens(kind: str, image: ImagePart, *, model: str = "") -> int:
    """The most input tokens ``image`` may cost on wire protocol ``kind`` (anthropic, openai,
    gemini, ollama, mock): what the budget reserves before the call. An image of unknown size
    (a URL) costs the protocol's most per image. Never decreases as either side grows.

    What the bounds cover (figures from each provider's docs, see the module docstring): for
    OpenAI, the tile-counted models (GPT-4o, GPT-4.1, GPT-4.5, GPT-5, o1, o3) and the
    patch-counted ones at the largest multiple documented (2.46, gpt-4.1-nano), in high detail
    (the default, ``auto``, counts no more). gpt-4o-mini counts an image at about 33 times those
    figures (priced so that it costs the same in money): it is covered only when ``model``
    names it, since the figure would otherwise swamp every other model's reservation. Not
    covered: models announced after these figures that take larger images (for Anthropic, the
    bound assumes 2576 px a side at most, Opus 4.7's native size), and Gemini's ``ultra high``
    media resolution (2240), which the router never asks for (``low`` detail or resolution
    counts less, so it is covered).
    A ``kind`` not listed costs the largest of the figures above (gpt-4o-mini's aside)."""
    width = image.width if image.width is not None else _LARGEST
    height = image.height if image.height is not None else _LARGEST
    if kind == "anthropic":
        return _anthropic_tokens(width, height)
    if kind == "openai":
        return _openai_tokens(width, height, mini=model.lower().startswith("gpt-4o-mini"))
    if kind == "gemini":
        tiles = (math.ceil(min(width, _GEMINI_EDGE) / _GEMINI_TILE_PX)
                 * math.ceil(min(height, _GEMINI_EDGE) / _GEMINI_TILE_PX))
        return max(_GEMINI_DEFAULT, _GEMINI_TILE_TOKENS * tiles)
    if kind == "ollama":
        return _OLLAMA_TOKENS
    if kind == "mock":
        return _MOCK_TOKENS
    return max(_anthropic_tokens(_LARGEST, _LARGEST), _openai_tokens(_LARGEST, _LARGEST, mini=False),
               image_tokens("gemini", ImagePart(mime_type=UNKNOWN_TYPE)), _OLLAMA_TOKENS)


def _anthropic_tokens(width: int, height: int) -> int:
    # Models up to 4.6: W*H/750 once scaled to fit 1568 px and ~1.15 MP (at most ~1600). Later
    # ones: one token per 28-px patch, padded, up to 2576 px on the long edge. Each side after
    # scaling is at most min(side, edge): counting on those bounds both rules and grows with
    # either side. No area cap is assumed for the larger models (none found documented).
    older = min(math.ceil(min(width, _ANTHROPIC_EDGE) * min(height, _ANTHROPIC_EDGE) / _ANTHROPIC_PX_PER_TOKEN),
                _ANTHROPIC_MAX)
    patches = (math.ceil(min(width, _ANTHROPIC_LARGE_EDGE) / _ANTHROPIC_PATCH_PX)
               * math.ceil(min(height, _ANTHROPIC_LARGE_EDGE) / _ANTHROPIC_PATCH_PX))
    return max(older, patches)


def _openai_tokens(width: int, height: int, *, mini: bool) -> int:
    # High detail: fit in 2048 x 2048, then the short side down to 768, in 512-px tiles. Each
    # side of the scaled image is at most min(short, 768) and min(long, 2048): counting tiles on
    # those is an upper bound that grows with either side (the exact count does not always).
    short, long = min(width, height), max(width, height)
    tiles = math.ceil(min(short, 768) / 512) * math.ceil(min(long, 2048) / 512)
    if mini:
        return _OPENAI_MINI_BASE + _OPENAI_MINI_TILE * tiles
    patches = min(math.ceil(width / _OPENAI_PATCH_PX) * math.ceil(height / _OPENAI_PATCH_PX), _OPENAI_PATCH_CAP)
    return max(_OPENAI_BASE + _OPENAI_TILE * tiles, math.ceil(patches * _OPENAI_PATCH_MULTIPLE))


def readable_bytes(size: int) -> str:
    """A size the way a person reads one: bytes, KiB or MiB."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def _quote(text: str) -> str:
    """A caller's text in a message: short, and with nothing that is not printable."""
    shown = text if len(text) <= 60 else text[:57] + "..."
    return repr(shown)
