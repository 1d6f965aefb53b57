"""Images in messages: every type read from its header, every refusal naming its field and what
is allowed, and the token estimates around each provider's thresholds. The images are built
here, byte by byte, from the format specifications."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_router import images
from llm_router.content import ImagePart
from llm_router.images import MAX_SIDE_PX, UNKNOWN_TYPE, image_size, image_tokens, read_image
from llm_router.types import InvalidInput

FIELD = "messages[0].content[1]"
LIMIT = 5 * 1024 * 1024
KINDS = ("anthropic", "openai", "gemini", "ollama", "mock")


# --- images built from the specifications ---------------------------------------------------


def png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    iend = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + iend


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b";"


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg(width: int, height: int, *, sof: int = 0xC0, before: bytes = b"") -> bytes:
    app0 = _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    frame = _segment(sof, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    scan = _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\x00" * 8
    return b"\xff\xd8" + app0 + before + frame + scan + b"\xff\xd9"


def _riff(chunk: bytes, payload: bytes) -> bytes:
    body = b"WEBP" + chunk + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_lossy(width: int, height: int) -> bytes:
    return _riff(b"VP8 ", b"\x30\x01\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 8)


def webp_lossless(width: int, height: int) -> bytes:
    return _riff(b"VP8L", b"\x2f" + struct.pack("<I", (width - 1) | (height - 1) << 14) + b"\x00" * 4)


def webp_extended(width: int, height: int) -> bytes:
    payload = b"\x10\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return _riff(b"VP8X", payload)


BUILDERS = {
    "png": (png, "image/png"),
    "gif": (gif, "image/gif"),
    "jpeg": (jpeg, "image/jpeg"),
    "webp-vp8": (webp_lossy, "image/webp"),
    "webp-vp8l": (webp_lossless, "image/webp"),
    "webp-vp8x": (webp_extended, "image/webp"),
}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def read(data: str | None = None, url: str | None = None, mime_type: str | None = None,
         max_bytes: int = LIMIT) -> ImagePart:
    return read_image(data=data, url=url, mime_type=mime_type, field=FIELD, max_bytes=max_bytes)


def refused(**kwargs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        read(**kwargs)
    error = caught.value
    assert error.field.startswith(FIELD) and str(error).startswith(error.field)
    assert error.allowed, "a refusal says what is allowed"
    return error


# --- every type, read from its header ---------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_each_image_type_is_read_with_its_size_from_the_header(name: str) -> None:
    build, mime = BUILDERS[name]
    raw = build(640, 480)
    part = read(data=b64(raw), mime_type=mime)
    assert part == ImagePart(mime_type=mime, data=b64(raw), size_bytes=len(raw), width=640, height=480)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_each_header_reader_gives_the_largest_sizes_its_format_holds(name: str) -> None:
    build, mime = BUILDERS[name]
    side = {"gif": 65535, "jpeg": 65535, "webp-vp8": 16383, "webp-vp8l": 16384}.get(name, MAX_SIDE_PX)
    assert image_size(build(side, 1), mime) == (side, 1)
    assert image_size(build(1, side), mime) == (1, side)


def test_jpeg_size_is_found_after_metadata_segments_and_fill_bytes() -> None:
    exif = _segment(0xE1, b"Exif\x00\x00" + b"\x00" * 60_000)
    comment = _segment(0xFE, b"made by hand")
    raw = jpeg(1920, 1080, before=exif + comment + b"\xff\xff")
    assert image_size(raw, "image/jpeg") == (1920, 1080)


@pytest.mark.parametrize("sof", [0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCF])
def test_jpeg_size_is_read_from_every_kind_of_frame_header(sof: int) -> None:
    assert image_size(jpeg(33, 44, sof=sof), "image/jpeg") == (33, 44)


def test_jpeg_without_a_frame_header_before_its_scan_has_no_size() -> None:
    raw = b"\xff\xd8" + _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\xff\xd9"
    assert image_size(raw, "image/jpeg") is None


def test_mime_line_breaks_are_accepted_and_the_part_keeps_the_unwrapped_text() -> None:
    text = b64(png(300, 200) + b"\x00" * 200)
    wrapped = "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76)) + "\n"
    part = read(data=wrapped, mime_type="image/png")
    assert part.data == text and (part.width, part.height) == (300, 200)


def test_the_declared_type_is_read_whatever_its_case() -> None:
    assert read(data=b64(gif(1, 1)), mime_type=" Image/GIF ").mime_type == "image/gif"


def test_a_five_megabyte_image_is_read_whole() -> None:
    raw = png(4000, 3000) + b"\x00" * (5 * 1000 * 1000)
    part = read(data=b64(raw), mime_type="image/png", max_bytes=8 * 1024 * 1024)
    assert part.size_bytes == len(raw) and (part.width, part.height) == (4000, 3000)


def test_an_image_over_the_limit_is_refused_before_any_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*_args: object, **_kwargs: object) -> bytes:
        raise AssertionError("decoded an image already known to be too large")

    monkeypatch.setattr(images.binascii, "a2b_base64", no_decoding)
    error = refused(data=b64(png(10, 10) + b"\x00" * (6 * 1024 * 1024)), mime_type="image/png")
    assert error.field == f"{FIELD}.data"
    assert "6.0 MiB" in error.problem and "5.0 MiB" in error.problem and error.allowed == "at most 5.0 MiB decoded"


def test_an_image_just_over_the_limit_says_both_sizes_in_bytes() -> None:
    raw = png(10, 10)
    error = refused(data=b64(raw), mime_type="image/png", max_bytes=len(raw) - 1)
    assert f"{len(raw)} bytes" in error.problem and f"{len(raw) - 1} bytes" in error.problem


# --- refusals of data ----------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"data": b64(png(1, 1)), "url": "https://example.com/a.png"}])
def test_an_image_needs_exactly_one_of_data_and_url(kwargs: dict[str, Any]) -> None:
    error = refused(mime_type="image/png", **kwargs)
    assert error.field == FIELD and "exactly one of data and url" in error.problem
    assert error.allowed is not None and '"data"' in error.allowed and '"url"' in error.allowed


def test_data_without_a_type_is_refused_naming_mime_type() -> None:
    error = refused(data=b64(png(1, 1)))
    assert error.field == f"{FIELD}.mimeType" and "required" in error.problem
    assert error.allowed == "image/png, image/jpeg, image/gif, image/webp"


@pytest.mark.parametrize("mime, hint", [("image/svg+xml", ""), ("image/bmp", ""), ("text/plain", ""),
                                        ("image/jpg", "did you mean image/jpeg")])
def test_a_type_not_taken_is_refused_with_the_types_that_are(mime: str, hint: str) -> None:
    error = refused(data=b64(jpeg(1, 1)), mime_type=mime)
    assert error.field == f"{FIELD}.mimeType" and repr(mime) in error.problem and hint in error.problem
    assert error.allowed == "image/png, image/jpeg, image/gif, image/webp"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_bytes_of_another_type_than_declared_are_refused_saying_what_they_are(name: str) -> None:
    build, actual = BUILDERS[name]
    declared = "image/png" if actual != "image/png" else "image/jpeg"
    error = refused(data=b64(build(8, 8)), mime_type=declared)
    assert error.field == f"{FIELD}.mimeType"
    assert f"says {declared} but the bytes are a" in error.problem and f"({actual})" in error.problem
    assert error.allowed == f"{actual} for these bytes"


def test_the_url_safe_alphabet_is_refused_with_how_to_convert() -> None:
    raw = png(1, 1) + b"\xfb\xff\xfe" * 4
    error = refused(data=base64.urlsafe_b64encode(raw).decode(), mime_type="image/png")
    assert error.field == f"{FIELD}.data" and "URL-safe" in error.problem
    assert error.allowed is not None and "replace - with +" in error.allowed


@pytest.mark.parametrize("data, problem", [
    ("iVBO Rw0K", "whitespace other than line breaks"),
    ("iVBO\tRw0K", "whitespace other than line breaks"),
    ("iVBORw0K*GgoA", "not base64"),
    ("iVBORw0KGgo=AAAA", "not base64"),
    ("iVBORw0KGg", "not a multiple of 4"),
    ("iVBORw0KGgoAAAé", "not base64"),
])
def test_text_that_is_not_strict_base64_is_refused(data: str, problem: str) -> None:
    error = refused(data=data, mime_type="image/png")
    assert error.field == f"{FIELD}.data" and problem in error.problem
    assert error.allowed is not None and "base64" in error.allowed


@pytest.mark.parametrize("data", ["", "\r\n"])
def test_empty_data_is_refused(data: str) -> None:
    error = refused(data=data, mime_type="image/png")
    assert error.field == f"{FIELD}.data" and "empty" in error.problem


@pytest.mark.parametrize("raw, what", [
    (b"%PDF-1.7\n", "a PDF document"),
    (b"BM" + b"\x00" * 40, "a BMP image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "an SVG image"),
    (b"\x00\x00\x00\x18ftypheic", "an ISO media file"),
    (b"just some text", "they start with no image signature"),
])
def test_bytes_that_are_no_image_taken_are_refused_saying_what_they_are(raw: bytes, what: str) -> None:
    error = refused(data=b64(raw), mime_type="image/png")
    assert error.field == f"{FIELD}.data" and what in error.problem
    assert error.allowed == "image/png, image/jpeg, image/gif, image/webp"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_an_image_cut_short_inside_its_header_is_refused(name: str) -> None:
    build, mime = BUILDERS[name]
    raw = build(64, 64)
    cut = raw[:{"png": 20, "gif": 8, "jpeg": 16}.get(name, 22)]
    error = refused(data=b64(cut), mime_type=mime)
    assert error.field == f"{FIELD}.data" and "does not give its size" in error.problem


@pytest.mark.parametrize("width, height", [(0, 10), (10, 0), (MAX_SIDE_PX + 1, 10), (10, 2**32 - 1)])
def test_implausible_dimensions_are_refused(width: int, height: int) -> None:
    error = refused(data=b64(png(width, height)), mime_type="image/png")
    assert error.field == f"{FIELD}.data" and f"{width} x {height}" in error.problem
    assert error.allowed == "1 to 100,000 pixels a side"


def test_data_that_is_not_text_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        read_image(data=123, url=None, mime_type="image/png", field=FIELD, max_bytes=LIMIT)  # type: ignore[arg-type]  # a caller's JSON may hold anything
    assert caught.value.field == f"{FIELD}.data"


# --- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, mime", [
    ("https://example.com/cat.png", "image/png"),
    ("http://example.com/a/b/CAT.JPG?size=large#top", "image/jpeg"),
    ("https://example.com/cat.jpeg", "image/jpeg"),
    ("https://example.com/anim.gif", "image/gif"),
    ("https://example.com/x.webp", "image/webp"),
    ("https://example.com/render?id=7", UNKNOWN_TYPE),
    ("https://example.com/png", UNKNOWN_TYPE),
])
def test_a_url_is_taken_unfetched_with_its_type_guessed_from_its_extension(url: str, mime: str) -> None:
    assert read(url=url) == ImagePart(mime_type=mime, url=url)


def test_a_declared_type_for_a_url_wins_over_its_extension() -> None:
    assert read(url="https://example.com/render?id=7", mime_type="image/webp").mime_type == "image/webp"


@pytest.mark.parametrize("url, problem", [
    ("ftp://example.com/a.png", "has ftp:"),
    ("file:///etc/passwd", "has file:"),
    ("javascript:alert(1)", "has javascript:"),
    ("example.com/a.png", "has no scheme"),
    ("https:///a.png", "has no host"),
    ("https://user:secret@example.com/a.png", "credentials"),
    ("https://user@example.com/a.png", "credentials"),
    ("https://example.com/a b.png", "whitespace or control"),
    ("https://example.com/a\x00.png", "whitespace or control"),
    ("http://[::1/a.png", "is not a URL"),
    ("https://example.com:http/a.png", "bad host or port"),
    ("https://example.com/" + "a" * 8192, "characters long"),
])
def test_a_url_that_cannot_be_sent_is_refused(url: str, problem: str) -> None:
    error = refused(url=url)
    assert error.field == f"{FIELD}.url" and problem in error.problem


@pytest.mark.parametrize("url", ["https://user:hunter2@example.com/a.png", "https://user:hunter2@[::1/a.png",
                                 "https://user:hunter2@example.com:port/a.png"])
def test_a_refused_url_never_echoes_its_credentials(url: str) -> None:
    assert "hunter2" not in str(refused(url=url))


def test_a_url_with_a_type_not_taken_is_refused() -> None:
    error = refused(url="https://example.com/a.svg", mime_type="image/svg+xml")
    assert error.field == f"{FIELD}.mimeType"


def test_a_data_url_is_taken_apart_and_checked_as_data() -> None:
    raw = webp_lossless(30, 40)
    part = read(url=f"data:image/webp;base64,{b64(raw)}")
    assert part == ImagePart(mime_type="image/webp", data=b64(raw), size_bytes=len(raw), width=30, height=40)


def test_a_data_url_may_be_longer_than_a_url_up_to_the_image_limit() -> None:
    raw = png(10, 10) + b"\x00" * 20_000
    assert read(url=f"DATA:image/png;base64,{b64(raw)}").size_bytes == len(raw)


@pytest.mark.parametrize("url, field, problem", [
    ("data:image/png,rawbytes", "url", "not base64"),
    ("data:;base64,AAAA", "url", "without a type"),
    ("data:text/plain;base64,AAAA", "url", "not an image type"),
    (f"data:image/jpeg;base64,{b64(png(2, 2))}", "mimeType", "says image/jpeg but the bytes are a PNG"),
])
def test_a_data_url_that_is_not_a_base64_image_is_refused(url: str, field: str, problem: str) -> None:
    error = refused(url=url)
    assert error.field == f"{FIELD}.{field}" and problem in error.problem


def test_a_data_url_and_a_declared_type_that_disagree_are_refused() -> None:
    error = refused(url=f"data:image/png;base64,{b64(png(2, 2))}", mime_type="image/gif")
    assert error.field == f"{FIELD}.mimeType" and "data: URL says image/png" in error.problem


# --- token estimates -----------------------------------------------------------------------


def sized(width: int, height: int) -> ImagePart:
    return ImagePart(mime_type="image/png", data="", size_bytes=1, width=width, height=height)


URL_IMAGE = ImagePart(mime_type=UNKNOWN_TYPE, url="https://example.com/a")


@pytest.mark.parametrize("width, height, tokens", [
    (200, 200, 64),          # 28-px patches: 8 x 8
    (1000, 1000, 1334),      # W*H/750 is the larger below 1568 px
    (1092, 1092, 1590),      # the documented largest square that is not scaled on older models
    (1568, 1568, 3136),      # later models keep more: 56 x 56 patches
    (2576, 2576, 8464),      # their native edge: 92 x 92 patches
    (2577, 9000, 8464),      # larger is scaled down, never counted more
])
def test_anthropic_estimate_around_its_thresholds(width: int, height: int, tokens: int) -> None:
    assert image_tokens("anthropic", sized(width, height)) == tokens


@pytest.mark.parametrize("width, height, tokens", [
    (100, 100, 255),         # one 512-px tile: 85 + 170
    (512, 512, 630),         # 256 patches at gpt-4.1-nano's 2.46
    (1248, 1248, 3742),      # 39 x 39 = 1521 patches
    (1280, 1248, 3779),      # 1560 patches, capped at 1536
    (8000, 8000, 3779),
])
def test_openai_estimate_around_its_thresholds(width: int, height: int, tokens: int) -> None:
    assert image_tokens("openai", sized(width, height)) == tokens


@pytest.mark.parametrize("width, height, tokens", [
    (512, 512, 2833 + 5667),
    (513, 512, 2833 + 2 * 5667),
    (768, 2048, 2833 + 8 * 5667),
    (4000, 4000, 2833 + 8 * 5667),
])
def test_openai_estimate_for_gpt_4o_mini_counts_its_multiple(width: int, height: int, tokens: int) -> None:
    assert image_tokens("openai", sized(width, height), model="gpt-4o-mini-2024-07-18") == tokens
    assert image_tokens("openai", sized(width, height), model="gpt-4o") < tokens


@pytest.mark.parametrize("width, height, tokens", [
    (384, 384, 1120),        # Gemini 3's default resolution is the larger below 5 tiles
    (385, 384, 1120),
    (1536, 1536, 1120),      # 4 tiles of 768: 1032
    (1537, 1536, 1548),      # 6 tiles
    (3072, 3072, 4128),      # 16 tiles, the most
    (90_000, 3072, 4128),
])
def test_gemini_estimate_around_its_thresholds(width: int, height: int, tokens: int) -> None:
    assert image_tokens("gemini", sized(width, height)) == tokens


def test_ollama_and_mock_estimates_are_fixed() -> None:
    for image in (sized(1, 1), sized(5000, 5000), URL_IMAGE):
        assert image_tokens("ollama", image) == 6404
        assert image_tokens("mock", image) == 85


@pytest.mark.parametrize("kind, most", [("anthropic", 8464), ("openai", 3779), ("gemini", 4128),
                                        ("ollama", 6404), ("mock", 85)])
def test_an_image_of_unknown_size_costs_the_most_an_image_may(kind: str, most: int) -> None:
    assert image_tokens(kind, URL_IMAGE) == most
    assert image_tokens(kind, sized(MAX_SIDE_PX, MAX_SIDE_PX)) == most


def test_an_unknown_protocol_costs_the_most_of_any() -> None:
    assert image_tokens("other", sized(1, 1)) == max(image_tokens(kind, URL_IMAGE) for kind in KINDS)


sides = st.integers(min_value=1, max_value=MAX_SIDE_PX)
growth = st.integers(min_value=0, max_value=5000)


@given(kind=st.sampled_from(KINDS), mini=st.booleans(), width=sides, height=sides, more_w=growth, more_h=growth)
def test_the_estimate_never_decreases_as_an_image_grows(
    kind: str, mini: bool, width: int, height: int, more_w: int, more_h: int
) -> None:
    model = "gpt-4o-mini" if mini else ""
    smaller = image_tokens(kind, sized(width, height), model=model)
    larger = image_tokens(kind, sized(min(width + more_w, MAX_SIDE_PX), min(height + more_h, MAX_SIDE_PX)),
                          model=model)
    assert 0 < smaller <= larger <= image_tokens(kind, URL_IMAGE, model=model)


# --- whatever is sent, a refusal or an image ------------------------------------------------

SIGNATURES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
              b"RIFF\x00\x00\x00\x00WEBPVP8L", b"RIFF\x00\x00\x00\x00WEBPVP8X"]
TYPES = st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp", "image/tiff", ""])


@given(head=st.sampled_from(SIGNATURES), tail=st.binary(max_size=300), mime=TYPES)
def test_random_bytes_are_an_image_or_an_invalid_input(head: bytes, tail: bytes, mime: str) -> None:
    try:
        part = read(data=b64(head + tail), mime_type=mime)
    except InvalidInput:
        return
    assert part.width is not None and part.height is not None
    assert 0 < part.width <= MAX_SIDE_PX and 0 < part.height <= MAX_SIDE_PX


@given(text=st.text(max_size=200), mime=st.one_of(st.none(), TYPES), as_url=st.booleans())
def test_random_text_as_data_or_url_is_an_image_or_an_invalid_input(text: str, mime: str | None, as_url: bool) -> None:
    try:
        if as_url:
            read(url=text, mime_type=mime)
        else:
            read(data=text, mime_type=mime)
    except InvalidInput:
        pass


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_header_cut_anywhere_gives_no_size_or_the_right_one_never_an_error(name: str) -> None:
    build, mime = BUILDERS[name]
    raw = build(123, 45)
    for end in range(len(raw) + 1):
        assert image_size(raw[:end], mime) in (None, (123, 45))
