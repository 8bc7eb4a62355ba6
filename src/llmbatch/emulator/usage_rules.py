"""How the providers count what is not plain text, as their documentation says, so that the
emulator bills images, documents, tool definitions and extra completions the way the service
does (and a test's "actual" is not llmbatch's own estimate a second time).

**OpenAI images** (the vision guide's "calculating costs"):

- *Tile models* (GPT-4o, 4.1, 4.5, GPT-5, o1, o3, 4o-mini, computer-use): `detail: "low"`
  costs the model's base tokens; otherwise the image is scaled to fit a 2048 x 2048 square,
  then down so its shortest side is at most 768 px, and each 512 px tile it covers costs the
  tile tokens, plus the base once. (base, tile): 85/170 (GPT-4o, 4.1, 4.5, 4-turbo),
  2833/5667 (GPT-4o mini), 75/150 (o1, o3), 70/140 (GPT-5), 65/129 (computer-use).
- *Patch models* (GPT-4.1 mini and nano, o4-mini, GPT-5 mini and nano): the 32 x 32 patches
  that cover the image, scaled down to at most 1,536 patches, times the model's multiplier
  (1.62 mini, 2.46 nano, 1.72 o4-mini); `detail` does not change it.

**Anthropic images** (the vision guide): an image whose long edge passes 1,568 px is scaled
down to it, and one still above 1.23 megapixels (784 x 1,568, the largest size the guide lists
as not resized) is scaled down to that area; it costs `ceil(width * height / 750)` tokens.

**Image sizes.** An image sent inline (a `data:` URL, or Anthropic's base64 source) is measured
from its header (PNG, JPEG, GIF or WebP). One sent by URL or file id cannot be fetched offline:
its size comes from a hash of the reference, 64 to 4,096 px a side, the same every time.

**Documents and files** (PDFs by URL, file id or inline; OpenAI's `file` / `input_file`
parts, Anthropic's `document` blocks): each page costs its text (1,500 to 3,000 tokens, as
Anthropic's PDF guide estimates) and an image of the page (a US-letter page at 1,568 px, by
the model's image rule), as both providers describe. An inline PDF's pages are counted in
its bytes (`/Type /Page`); otherwise, and for one by URL or file id, 1 to 20 pages from a
hash of the reference. Anthropic's plain-text documents cost their text.

**Tools.** Anthropic adds a tool-use system prompt to every request that carries tools (its
tool-use pricing page, per model and `tool_choice`): 346 tokens for `auto`/`none` and 313
for `any`/`tool` on Claude 4 and Claude 3.7 Sonnet; 264/340 on the Haikus, 530/281 on
Claude 3 Opus, 159/235 on Claude 3 Sonnet. OpenAI documents no such figure.

**Completions.** `n` and `best_of` on `/v1/completions`: the service generates
`max(n, best_of)` completions and bills them all, returning `n`.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from typing import Any

Json = dict[str, Any]

TILE_RULES: dict[str, tuple[int, int]] = {  # model prefix -> (base, tile); longest prefix wins
    "gpt-4o": (85, 170),
    "gpt-4.1": (85, 170),
    "gpt-4.5": (85, 170),
    "gpt-4-turbo": (85, 170),
    "gpt-4o-mini": (2833, 5667),
    "o1": (75, 150),
    "o3": (75, 150),
    "gpt-5": (70, 140),
    "computer-use": (65, 129),
}
PATCH_RULES: dict[str, float] = {
    "gpt-4.1-mini": 1.62,
    "gpt-4.1-nano": 2.46,
    "gpt-5-mini": 1.62,
    "gpt-5-nano": 2.46,
    "o4-mini": 1.72,
}
DEFAULT_TILE = (85, 170)
MAX_PATCHES = 1536
ANTHROPIC_LONG_EDGE = 1568
ANTHROPIC_MAX_PIXELS = 784 * 1568
ANTHROPIC_TOOL_PROMPT: dict[str, tuple[int, int]] = {  # prefix -> (auto/none, any/tool)
    "claude-3-opus": (530, 281),
    "claude-3-sonnet": (159, 235),
    "claude-3-haiku": (264, 340),
    "claude-3-5-haiku": (264, 340),
    "claude-haiku": (264, 340),
}
ANTHROPIC_TOOL_PROMPT_DEFAULT = (346, 313)  # Claude 4 family, Claude 3.7 Sonnet
PAGE = (1224, 1584)  # a US-letter page rendered at 144 dpi
MAX_HASHED_PAGES = 20


def _longest(table: dict[str, Any], model: str) -> str | None:
    return max((p for p in table if model.startswith(p)), key=len, default=None)


def _digest(ref: str) -> bytes:
    return hashlib.blake2b(ref.encode(errors="replace"), digest_size=16).digest()


# -- sizes -----------------------------------------------------------------------------------
def image_size(ref: str) -> tuple[int, int]:
    """(width, height) of an image reference: a data: URL measured, anything else hashed."""
    if ref.startswith("data:"):
        size = measure(_data_bytes(ref))
        if size is not None:
            return size
    h = _digest(ref)
    return 64 + int.from_bytes(h[0:4], "big") % 4033, 64 + int.from_bytes(h[4:8], "big") % 4033


def _data_bytes(ref: str, limit: int = 1 << 16) -> bytes:
    """The first `limit` bytes of a data: URL's payload (enough for any image header)."""
    _, _, payload = ref.partition(",")
    return _b64(payload[: limit * 4 // 3 + 4])


def _b64(text: str) -> bytes:
    text = text[: len(text) - len(text) % 4]
    try:
        return base64.b64decode(text, validate=False)
    except ValueError:
        return b""


def measure(data: bytes) -> tuple[int, int] | None:
    """Pixel size from an image's header: PNG, GIF, JPEG or WebP; None if unreadable."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return (w, h) if w and h else None
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return (w, h) if w and h else None
    if data[:2] == b"\xff\xd8":
        return _jpeg(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return (w, h) if w and h else None
        i += 2 + length
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return w, h
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        return (w & 0x3FFF, h & 0x3FFF) if w & 0x3FFF and h & 0x3FFF else None
    return None


# -- images ----------------------------------------------------------------------------------
def openai_image_tokens(model: str, detail: str | None, width: int, height: int) -> int:
    """Input tokens of one image on an OpenAI model (see the module docstring)."""
    patch = _longest(PATCH_RULES, model)
    if patch is not None:
        return math.ceil(_patches(width, height) * PATCH_RULES[patch])
    key = _longest(TILE_RULES, model)
    base, tile = TILE_RULES[key] if key is not None else DEFAULT_TILE
    if detail == "low":
        return base
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        s = 2048 / max(w, h)
        w, h = w * s, h * s
    if min(w, h) > 768:
        s = 768 / min(w, h)
        w, h = w * s, h * s
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


def _patches(width: int, height: int) -> int:
    n = math.ceil(width / 32) * math.ceil(height / 32)
    if n <= MAX_PATCHES:
        return n
    s = math.sqrt(MAX_PATCHES * 32 * 32 / (width * height))
    w, h = width * s, height * s
    # shrink until the patch grid fits (the whole patches of the scaled image)
    s2 = min(math.floor(w / 32) / (w / 32), math.floor(h / 32) / (h / 32))
    w, h = w * s2, h * s2
    return min(MAX_PATCHES, math.ceil(w / 32) * math.ceil(h / 32))


def anthropic_image_tokens(width: int, height: int) -> int:
    """Input tokens of one image on a Claude model (see the module docstring)."""
    w, h = float(width), float(height)
    if max(w, h) > ANTHROPIC_LONG_EDGE:
        s = ANTHROPIC_LONG_EDGE / max(w, h)
        w, h = w * s, h * s
    if w * h > ANTHROPIC_MAX_PIXELS:
        s = math.sqrt(ANTHROPIC_MAX_PIXELS / (w * h))
        w, h = w * s, h * s
    return math.ceil(round(w) * round(h) / 750)


# -- documents -------------------------------------------------------------------------------
def document_tokens(ref: str, page_image: int) -> int:
    """Input tokens of a PDF: per page its text and `page_image` tokens of its picture."""
    pages = _pdf_pages(ref)
    h = _digest("pages:" + ref)
    text = sum(1500 + h[i % 16] * 1500 // 255 for i in range(pages))
    return text + pages * page_image


def _pdf_pages(ref: str) -> int:
    if ref.startswith("data:") or ref.startswith("JVBER"):  # inline: count its page objects
        payload = ref.partition(",")[2] if ref.startswith("data:") else ref
        n = len(re.findall(rb"/Type\s*/Page(?![a-z])", _b64(payload)))
        if n:
            return n
    return 1 + int.from_bytes(_digest(ref)[8:12], "big") % MAX_HASHED_PAGES


def openai_media_tokens(part: Json, model: str) -> int | None:
    """Tokens of an image or file content part of a chat or Responses request, or None if
    the part is neither."""
    kind = str(part.get("type", ""))
    if kind == "image_url" or (not kind and "image_url" in part):
        spec = part.get("image_url")
        url, detail = (
            (spec.get("url"), spec.get("detail")) if isinstance(spec, dict) else (spec, None)
        )
        return openai_image_tokens(model, _str(detail), *image_size(_str(url) or ""))
    if kind == "input_image":
        ref = _str(part.get("image_url")) or _str(part.get("file_id")) or ""
        return openai_image_tokens(model, _str(part.get("detail")), *image_size(ref))
    if kind == "file" and isinstance(part.get("file"), dict):
        f = part["file"]
        ref = _str(f.get("file_data")) or _str(f.get("file_id")) or _str(f.get("filename")) or ""
        return document_tokens(ref, openai_image_tokens(model, "high", *PAGE))
    if kind == "input_file":
        ref = (
            _str(part.get("file_data"))
            or _str(part.get("file_url"))
            or _str(part.get("file_id"))
            or ""
        )
        return document_tokens(ref, openai_image_tokens(model, "high", *PAGE))
    return None


def anthropic_media_tokens(block: Json, text_tokens: Any) -> int | None:
    """Tokens of an image or document block of a Messages request, or None if it is
    neither; `text_tokens` counts a plain-text document's text."""
    kind = block.get("type")
    if kind not in ("image", "document"):
        return None
    source: Json = block["source"] if isinstance(block.get("source"), dict) else {}
    stype = source.get("type")
    if kind == "document" and stype == "text":
        return int(text_tokens(_str(source.get("data")) or ""))
    if kind == "document" and stype == "content":
        content = source.get("content")
        parts = content if isinstance(content, list) else [content]
        return sum(int(text_tokens(p.get("text", ""))) if isinstance(p, dict) else 0 for p in parts)
    if stype == "base64":
        media = _str(source.get("media_type")) or "application/octet-stream"
        ref = f"data:{media};base64,{_str(source.get('data')) or ''}"
    else:
        ref = _str(source.get("url")) or _str(source.get("file_id")) or ""
    if kind == "image":
        return anthropic_image_tokens(*image_size(ref))
    return document_tokens(ref, anthropic_image_tokens(*PAGE))


def _str(v: object) -> str | None:
    return v if isinstance(v, str) else None


# -- tools and extra completions ---------------------------------------------------------------
def anthropic_tool_prompt(model: str, tool_choice: object) -> int:
    """The tool-use system prompt Anthropic adds when a request carries tools."""
    key = _longest(ANTHROPIC_TOOL_PROMPT, model)
    auto, forced = ANTHROPIC_TOOL_PROMPT[key] if key else ANTHROPIC_TOOL_PROMPT_DEFAULT
    kind = tool_choice.get("type") if isinstance(tool_choice, dict) else None
    return forced if kind in ("any", "tool") else auto


def completions_billed(body: Json) -> int:
    """How many completions a `/v1/completions` request is billed for: max(n, best_of)."""
    counts = [v for v in (body.get("n"), body.get("best_of")) if isinstance(v, int) and v >= 1]
    return max([1, *counts])
