"""The emulator counts images, documents, tool prompts and extra completions as the providers
document them (usage_rules.py), through the real synth: a test's "actual" is the provider's
rule, not llmbatch's worst case a second time."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from llmbatch.emulator import usage_rules as rules
from llmbatch.emulator.anthropic_synth import count_prompt
from llmbatch.emulator.synth import prompt_tokens, respond


def png(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + ihdr
        + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    )


def data_url(raw: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("model", "detail", "size", "tokens"),
    [
        ("gpt-4o", "high", (1024, 1024), 765),  # the vision guide's examples
        ("gpt-4o", "high", (2048, 4096), 1105),
        ("gpt-4o", "low", (4096, 4096), 85),
        ("gpt-4o", None, (512, 512), 255),
        ("gpt-4o-mini", "low", (100, 100), 2833),
        ("gpt-4o-mini", "high", (1024, 1024), 2833 + 4 * 5667),
        ("o3", "high", (1024, 1024), 75 + 4 * 150),
        ("gpt-5", "high", (1024, 1024), 70 + 4 * 140),
        ("gpt-4.1-mini", "low", (1024, 1024), 1659),  # 1,024 patches x 1.62, detail or not
        ("gpt-4.1-nano", None, (1800, 2400), 3572),  # 1,452 patches x 2.46
        ("o4-mini", None, (9000, 9000), 2617),  # scaled to 39 x 39 patches (1,536 at most)
    ],
)
def test_openai_image_tokens_follow_the_vision_guide(
    model: str, detail: str | None, size: tuple[int, int], tokens: int
) -> None:
    assert rules.openai_image_tokens(model, detail, *size) == tokens


def test_anthropic_image_tokens_scale_down_large_images() -> None:
    assert rules.anthropic_image_tokens(1092, 1092) == 1590  # the vision guide's 1:1 maximum
    assert rules.anthropic_image_tokens(200, 200) == 54
    assert rules.anthropic_image_tokens(5000, 5000) <= 1640
    assert rules.anthropic_image_tokens(784, 1568) == 1640


def test_sizes_are_measured_inline_and_hashed_by_reference() -> None:
    assert rules.image_size(data_url(png(640, 480))) == (640, 480)
    gif = b"GIF89a" + struct.pack("<HH", 33, 44) + b"\x00" * 8
    assert rules.image_size(data_url(gif, "image/gif")) == (33, 44)
    jpeg = b"\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xc0\x00\x11\x08" + struct.pack(">HH", 300, 200)
    assert rules.image_size(data_url(jpeg + b"\x00" * 12, "image/jpeg")) == (200, 300)
    webp = (
        b"RIFF\x00\x00\x00\x00WEBPVP8X"
        + b"\x00" * 8
        + (99).to_bytes(3, "little")
        + (49).to_bytes(3, "little")
    )
    assert rules.image_size(data_url(webp, "image/webp")) == (100, 50)
    by_url = rules.image_size("https://example.com/cat.jpg")
    assert by_url == rules.image_size("https://example.com/cat.jpg")  # the same every time
    assert all(64 <= v <= 4096 for v in by_url)


def test_the_synth_bills_images_files_and_extra_completions() -> None:
    text = {"type": "text", "text": "describe"}
    image = {"type": "image_url", "image_url": {"url": data_url(png(1024, 1024)), "detail": "high"}}
    plain = prompt_tokens(
        "chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": [text]}]}
    )
    with_image = prompt_tokens(
        "chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": [text, image]}]}
    )
    assert with_image - plain == 765
    pdf = {"type": "file", "file": {"file_id": "file-abc"}}
    with_file = prompt_tokens(
        "chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": [text, pdf]}]}
    )
    assert with_file - plain >= 1500 + 85  # a page's text and its picture at least
    body = {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "hi",
        "max_tokens": 10,
        "n": 2,
        "best_of": 3,
    }
    _out, usage = respond(
        "completions", body, model=body["model"], created=0, salt="s", length_rate=1.0
    )
    assert usage.output == 30  # best_of 3 completions of 10 tokens, all billed


def test_inline_pdfs_count_their_pages() -> None:
    raw = b"%PDF-1.4\n" + b"".join(b"%d 0 obj << /Type /Page >> endobj\n" % i for i in range(7))
    raw += b"9 0 obj << /Type /Pages >> endobj\n"
    assert rules._pdf_pages(data_url(raw, "application/pdf")) == 7


def test_anthropic_adds_its_tool_prompt_and_prices_documents() -> None:
    base = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
    }
    tool = {"name": "t", "input_schema": {"type": "object"}}
    plain = count_prompt(base).tokens
    auto = count_prompt({**base, "tools": [tool]}).tokens
    forced = count_prompt({**base, "tools": [tool], "tool_choice": {"type": "any"}}).tokens
    assert auto - forced == 346 - 313 and auto > plain + 346
    old = {**base, "model": "claude-3-opus-20240229"}
    assert count_prompt({**old, "tools": [tool]}).tokens - count_prompt(old).tokens > 530
    doc = {"type": "document", "source": {"type": "url", "url": "https://x.example/a.pdf"}}
    with_doc = count_prompt({**base, "messages": [{"role": "user", "content": [doc]}]}).tokens
    assert with_doc > 1500 + 1000
    text_doc = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "one two three"},
    }
    assert rules.anthropic_media_tokens(text_doc, lambda s: len(s.split())) == 3
