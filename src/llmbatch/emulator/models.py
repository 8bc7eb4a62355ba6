"""The models each door knows: ids, dated snapshots and aliases, context windows.

**Where the ids come from.** The built-in catalog of a door is every model id the installed
official SDK names (`sdk_models.py`: `openai`'s and `anthropic`'s type literals,
`google-genai`'s table of Gemini models), plus the extras below (older ids, and the Gemini
models the batch API documents), so the emulator accepts exactly the names the client you
have installed can send; if an SDK's files move, the extras and family tables still answer.

**What a card says** (`ModelCard`): the context window and the largest output, from the
longest family prefix of the id (the emulator's own figures, from the providers' model
pages; an unknown id gets its door's default); the endpoint kinds it serves (OpenAI: from
the literal it came from; Gemini: the `supportedGenerationMethods` its name implies, so an
embedding model takes `asyncBatchEmbedContent` and not `batchGenerateContent`; None = any);
the `snapshot` an alias runs as — OpenAI answers with
the dated id in a reply's `model` (`gpt-4o-mini` → `gpt-4o-mini-2024-07-18`), Anthropic's
`GET /v1/models/{alias}` returns the dated model. An alias's snapshot is the latest dated id
`ALIAS-YYYY-MM-DD` / `ALIAS-YYYYMMDD` in the catalog (`-latest` and `-0` aliases drop that
suffix first), except where `SNAPSHOT_OVERRIDES` says otherwise.

**The models file** (`llmbatch emulator --models FILE`, JSON or TOML)::

    replace = false                      # true: only these models, not the built-in ones
    openai = ["ft:gpt-4o-mini-2024-07-18:acme::abc123"]   # names, or tables:
    [[anthropic]]
    id = "claude-next-20270101"
    context_window = 400000              # optional, default from the family / door
    max_output_tokens = 64000            # optional
    endpoints = ["chat", "responses"]    # optional (OpenAI): kinds it serves; default any
    snapshot = "claude-next-20270101"    # optional: what it runs as
    gemini = [{id = "gemini-4-flash", endpoints = ["batchGenerateContent"]}]  # Gemini: methods

A bad file is one `ConfigError` naming the file (and the line, for a syntax error) and
the entry.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmbatch.emulator.sdk_models import (
    GEMINI_EMBED,
    GEMINI_GENERATE,
    GEMINI_LIVE,
    gemini_methods,
    sdk_models,
)
from llmbatch.errors import ConfigError

Json = dict[str, Any]
DOORS = ("openai", "anthropic", "gemini")
#: The emulator setting that holds each door's model entries.
SETTINGS = {"openai": "models", "anthropic": "anthropic_models", "gemini": "gemini_models"}
#: Endpoint kinds (as `synth.KINDS` names them) plus `audio` (listed, not served).
ENDPOINT_KINDS = frozenset(
    {"chat", "responses", "completions", "embeddings", "moderations", "images", "videos", "audio"}
)
#: What a card's `endpoints` may name, per door (Gemini: `supportedGenerationMethods`).
DOOR_KINDS = {
    "openai": ENDPOINT_KINDS,
    "anthropic": ENDPOINT_KINDS,
    "gemini": GEMINI_GENERATE | GEMINI_EMBED | GEMINI_LIVE,
}
#: Family prefix -> (context window, largest output). Longest prefix wins.
OPENAI_FAMILIES: dict[str, tuple[int, int]] = {
    "gpt-6": (1_050_000, 128_000),
    "gpt-5": (400_000, 128_000),
    "gpt-5-chat": (128_000, 16_384),
    "gpt-5.1-chat": (128_000, 16_384),
    "gpt-5.2-chat": (128_000, 16_384),
    "gpt-5.3-chat": (128_000, 16_384),
    "gpt-5.4": (1_050_000, 128_000),
    "gpt-5.5": (1_050_000, 128_000),
    "gpt-5.6": (1_050_000, 128_000),
    "gpt-4.1": (1_047_576, 32_768),
    "gpt-4o": (128_000, 16_384),
    "gpt-4o-2024-05-13": (128_000, 4_096),
    "chatgpt-4o": (128_000, 16_384),
    "gpt-audio": (128_000, 16_384),
    "gpt-4-turbo": (128_000, 4_096),
    "gpt-4-0125": (128_000, 4_096),
    "gpt-4-1106": (128_000, 4_096),
    "gpt-4-vision": (128_000, 4_096),
    "gpt-4": (8_192, 8_192),
    "gpt-4-32k": (32_768, 32_768),
    "gpt-3.5-turbo": (16_385, 4_096),
    "gpt-3.5-turbo-0301": (4_096, 4_096),
    "gpt-3.5-turbo-0613": (4_096, 4_096),
    "gpt-3.5-turbo-instruct": (4_096, 4_096),
    "davinci-002": (16_384, 16_384),
    "babbage-002": (16_384, 16_384),
    "o1": (200_000, 100_000),
    "o1-mini": (128_000, 65_536),
    "o1-preview": (128_000, 32_768),
    "o3": (200_000, 100_000),
    "o4-mini": (200_000, 100_000),
    "codex-mini": (200_000, 100_000),
    "computer-use": (8_192, 1_024),
    "text-embedding": (8_191, 0),
    "omni-moderation": (32_768, 0),
    "text-moderation": (32_768, 0),
    "gpt-image": (32_000, 0),
    "chatgpt-image": (32_000, 0),
    "dall-e": (4_000, 0),
    "sora": (4_000, 0),
    "whisper": (0, 0),
    "tts": (4_096, 0),
    "gpt-4o-mini-tts": (4_096, 0),
    "gpt-4o-transcribe": (16_000, 2_000),
    "gpt-4o-mini-transcribe": (16_000, 2_000),
    "gpt-transcribe": (16_000, 2_000),
}
ANTHROPIC_FAMILIES: dict[str, tuple[int, int]] = {
    "claude": (200_000, 64_000),
    "claude-3-haiku": (200_000, 4_096),
    "claude-3-5-haiku": (200_000, 8_192),
    "claude-3-5-sonnet": (200_000, 8_192),
    "claude-3-7-sonnet": (200_000, 64_000),
    "claude-opus-4": (200_000, 32_000),
    "claude-opus-4-5": (200_000, 64_000),
    "claude-opus-4-6": (1_000_000, 128_000),
    "claude-opus-4-7": (1_000_000, 128_000),
    "claude-opus-4-8": (1_000_000, 128_000),
    "claude-sonnet-4-6": (1_000_000, 64_000),
    # Sonnet 4 and 4.5 take 1M tokens with the `context-1m` beta (priced as a long-context
    # tier); a batch carries no header to ask for it, so the emulator always allows it.
    "claude-sonnet-4": (1_000_000, 64_000),
}
#: Gemini: input token limit, output token limit (the models page of the Gemini API docs).
GEMINI_FAMILIES: dict[str, tuple[int, int]] = {
    "gemini": (1_048_576, 65_536),
    "gemini-2.0": (1_048_576, 8_192),
    "gemini-1.5": (1_048_576, 8_192),
    "gemini-1.5-pro": (2_097_152, 8_192),
    "gemini-2.5-flash-image": (32_768, 32_768),
    "gemini-2.0-flash-preview-image": (32_768, 8_192),
    "gemini-embedding": (2_048, 0),
    "text-embedding": (2_048, 0),
    "embedding": (2_048, 0),
}
_FAMILIES = {"openai": OPENAI_FAMILIES, "anthropic": ANTHROPIC_FAMILIES, "gemini": GEMINI_FAMILIES}
_DEFAULT = {
    "openai": (128_000, 16_384),
    "anthropic": (200_000, 64_000),
    "gemini": (1_048_576, 65_536),
}

#: Models the emulator knows even when an SDK does not name them (older ids, real names).
EXTRA_OPENAI: tuple[str, ...] = ("omni-moderation-latest", "gpt-3.5-turbo-instruct")
EXTRA_ANTHROPIC: tuple[str, ...] = (
    "claude-opus-4-1",
    "claude-opus-4-1-20250805",
    "claude-opus-4-0",
    "claude-opus-4-20250514",
    "claude-sonnet-4-5",
    "claude-sonnet-4-5-20250929",
    "claude-sonnet-4-0",
    "claude-sonnet-4-20250514",
    "claude-3-7-sonnet-latest",
    "claude-3-7-sonnet-20250219",
    "claude-3-5-haiku-latest",
    "claude-3-5-haiku-20241022",
    "claude-3-haiku-20240307",
)
#: The Gemini models the batch API documents (generateContent and embedContent ones).
EXTRA_GEMINI: tuple[str, ...] = (
    "gemini-3-pro-preview",
    "gemini-3-flash-preview",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.0-flash",
    "gemini-2.0-flash-lite",
    "gemini-embedding-001",
    "text-embedding-004",
)
_EXTRA = {"openai": EXTRA_OPENAI, "anthropic": EXTRA_ANTHROPIC, "gemini": EXTRA_GEMINI}
#: Aliases whose snapshot is not the latest dated id (the service pins these).
SNAPSHOT_OVERRIDES = {"gpt-4o": "gpt-4o-2024-08-06", "gpt-4": "gpt-4-0613"}
#: Aliases named after no dated id of their own.
ALIASES = {
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "gpt-4-turbo-preview": "gpt-4-0125-preview",
    "gpt-4-vision-preview": "gpt-4-1106-vision-preview",
}
_OPENAI_DATE = re.compile(r"^(.*)-(\d{4})-(\d{2})-(\d{2})$")
_ANTHROPIC_DATE = re.compile(r"^(.*)-(\d{4})(\d{2})(\d{2})$")
_OLD_DATE = re.compile(r"^(gpt-4|gpt-4-32k|gpt-3.5-turbo|gpt-3.5-turbo-16k)-([01]\d)(\d{2})$")
_EPOCH_2024 = 1_704_067_200


@dataclass(frozen=True)
class ModelCard:
    """One model a door accepts."""

    id: str
    context_window: int
    max_output_tokens: int
    #: Endpoint kinds it serves (`chat`, `responses`, `embeddings`, ...); None = any.
    endpoints: frozenset[str] | None = None
    #: The dated model an alias runs as; None for a snapshot (or an undated model).
    snapshot: str | None = None
    #: Unix time it was released: from the date in its id (or its snapshot's), else a
    #: fixed epoch (Anthropic documents an epoch value for an unknown release date).
    created: int = 0

    @property
    def runs_as(self) -> str:
        """The id a reply carries as `model`."""
        return self.snapshot or self.id

    def serves(self, kind: str) -> bool:
        return self.endpoints is None or kind in self.endpoints

    def public(self) -> Json:
        """The card as the control API shows it."""
        out: Json = {
            "id": self.id,
            "context_window": self.context_window,
            "max_output_tokens": self.max_output_tokens,
            "endpoints": sorted(self.endpoints) if self.endpoints is not None else None,
            "snapshot": self.snapshot,
            "created": self.created,
        }
        return out


class Catalog:
    """The models of one door, by id (insertion order kept for listing)."""

    def __init__(self, door: str, cards: Iterable[ModelCard]) -> None:
        self.door = door
        self.cards: dict[str, ModelCard] = {c.id: c for c in cards}

    def __contains__(self, name: object) -> bool:
        return name in self.cards

    def __iter__(self) -> Iterator[str]:
        return iter(self.cards)

    def __len__(self) -> int:
        return len(self.cards)

    def get(self, name: str) -> ModelCard | None:
        return self.cards.get(name)

    def canonical(self) -> list[ModelCard]:
        """The models a list shows on Anthropic's door: every model but aliases of a dated
        snapshot the catalog also holds, in catalog order (the SDK lists newest first)."""
        return [c for c in self.cards.values() if c.snapshot is None or c.snapshot not in self]


# --- cards -----------------------------------------------------------------------------------


def _dated(door: str, model_id: str) -> tuple[str, int] | None:
    """(the alias part, release time) of a dated id, or None (Gemini ids carry no date)."""
    if door == "gemini":
        return None
    pattern = _OPENAI_DATE if door == "openai" else _ANTHROPIC_DATE
    m = pattern.match(model_id)
    if m is None:
        return None
    try:
        when = datetime(int(m[2]), int(m[3]), int(m[4]), tzinfo=UTC)
    except ValueError:
        return None
    return m[1], int(when.timestamp())


def _family(door: str, model_id: str) -> tuple[int, int]:
    table = _FAMILIES[door]
    name = model_id.removeprefix("ft:")
    best = ""
    for prefix in table:
        if name.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return table[best] if best else _DEFAULT[door]


def _snapshots(door: str, ids: Iterable[str]) -> dict[str, str]:
    """Alias -> the dated id it runs as, among `ids`."""
    latest: dict[str, tuple[int, str]] = {}
    names = list(ids)
    for model_id in names:
        dated = _dated(door, model_id)
        if dated is None and door == "openai":
            m = _OLD_DATE.match(model_id)
            if m is not None:  # `gpt-4-0613`: month and day only, older than any dated id
                dated = m[1], _EPOCH_2024 - 10_000 + int(m[2] + m[3])
        if dated is not None:
            alias, when = dated
            if alias not in latest or when > latest[alias][0]:
                latest[alias] = (when, model_id)
    out: dict[str, str] = {}
    known = set(names)
    for model_id in names:
        base = model_id
        for suffix in ("-latest", "-0"):
            if door == "anthropic" and base.endswith(suffix):
                base = base.removesuffix(suffix)
        target = SNAPSHOT_OVERRIDES.get(model_id) or ALIASES.get(model_id)
        if target is None and base in latest and latest[base][1] != model_id:
            target = latest[base][1]
        if target is not None and target in known and target != model_id:
            out[model_id] = target
    return out


def card(
    door: str, model_id: str, kinds: frozenset[str] | None, snapshot: str | None = None
) -> ModelCard:
    """A card for `model_id` from the family table."""
    context, output = _family(door, model_id)
    dated = _dated(door, snapshot or model_id)
    created = dated[1] if dated else (_EPOCH_2024 if door == "openai" else 0)
    return ModelCard(model_id, context, output, kinds, snapshot, created)


def builtin_ids(door: str) -> list[str | Json]:
    """The built-in catalog's ids: the SDK's, then the extras it lacks."""
    extra = _EXTRA[door]
    ids: list[str | Json] = list(sdk_models(door))
    return ids + [m for m in extra if m not in ids]


def build(door: str, entries: Iterable[str | Json]) -> Catalog:
    """The catalog of `door` from config entries (names, or cards as dicts; see
    `check_entry`). Names take their kinds from the SDK and their windows from the
    family table; a dict's fields override them."""
    known = sdk_models(door)
    listed = [e if isinstance(e, dict) else {"id": e} for e in entries]
    snapshots = _snapshots(door, [e["id"] for e in listed])
    cards = []
    for entry in listed:
        model_id = entry["id"]
        kinds = known.get(model_id)
        if door == "anthropic":
            kinds = None
        elif door == "gemini":
            kinds = gemini_methods(model_id)
        elif kinds is None and model_id in EXTRA_OPENAI:
            kinds = _extra_kinds(model_id)
        base = card(door, model_id, kinds, snapshots.get(model_id))
        endpoints = entry.get("endpoints")
        cards.append(
            ModelCard(
                model_id,
                int(entry.get("context_window", base.context_window)),
                int(entry.get("max_output_tokens", base.max_output_tokens)),
                frozenset(endpoints) if endpoints is not None else base.endpoints,
                entry.get("snapshot", base.snapshot),
                base.created,
            )
        )
    return Catalog(door, cards)


def _extra_kinds(model_id: str) -> frozenset[str]:
    if "moderation" in model_id:
        return frozenset({"moderations"})
    return frozenset({"completions"})


# --- entries and the models file -------------------------------------------------------------

_ENTRY_KEYS = {"id", "context_window", "max_output_tokens", "endpoints", "snapshot"}


def check_entry(entry: Any, where: str, door: str) -> str | Json:
    """A model entry of `door` (a name, or a card as a dict) checked; raises ConfigError
    naming `where`."""
    if isinstance(entry, str):
        if not entry.strip():
            raise ConfigError(f"{where}: a model id must be a non-empty string")
        return entry
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a model id or a table with 'id', got {entry!r}")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {sorted(unknown)}; known: {', '.join(sorted(_ENTRY_KEYS))}"
        )
    if not isinstance(entry.get("id"), str) or not entry["id"].strip():
        raise ConfigError(f"{where}: 'id' must be a non-empty string")
    for key in ("context_window", "max_output_tokens"):
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{where}: '{key}' must be an integer >= 0, got {value!r}")
        if value is not None and value < 0:
            raise ConfigError(f"{where}: '{key}' must be an integer >= 0, got {value!r}")
    endpoints, kinds = entry.get("endpoints"), DOOR_KINDS[door]
    if endpoints is not None and (not isinstance(endpoints, list) or not set(endpoints) <= kinds):
        raise ConfigError(f"{where}: 'endpoints' must be a list of {', '.join(sorted(kinds))}")
    snapshot = entry.get("snapshot")
    if snapshot is not None and not isinstance(snapshot, str):
        raise ConfigError(f"{where}: 'snapshot' must be a model id")
    return {k: v for k, v in entry.items() if v is not None}


def check_entries(value: Any, where: str, door: str) -> list[str | Json]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of model ids or tables")
    return [check_entry(e, f"{where}[{i}]", door) for i, e in enumerate(value)]


def entry_id(entry: str | Json) -> str:
    return entry if isinstance(entry, str) else str(entry["id"])


def merge(entries: list[str | Json], added: list[str | Json]) -> list[str | Json]:
    """`entries` with `added` appended; an added id replaces an entry of the same id."""
    ids = {entry_id(e) for e in added}
    return [e for e in entries if entry_id(e) not in ids] + added


def load_models_file(path: str | Path) -> tuple[bool, dict[str, list[str | Json]]]:
    """Read a models file: (replace?, {door: entries}). Raises ConfigError saying where."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read the models file: {e}") from None
    data: Any
    if p.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}:{e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a table of model lists ({', '.join(DOORS)})")
    unknown = set(data) - {"replace", *DOORS}
    if unknown:
        raise ConfigError(
            f"{p}: unknown key(s) {sorted(unknown)}; known: replace, {', '.join(DOORS)}"
        )
    replace = data.get("replace", False)
    if not isinstance(replace, bool):
        raise ConfigError(f"{p}: 'replace' must be true or false")
    doors = {
        door: check_entries(data[door], f"{p}: {door}", door) for door in DOORS if door in data
    }
    if not doors:
        raise ConfigError(f"{p}: no models: give an {', '.join(DOORS)} list (one or more)")
    return replace, doors
