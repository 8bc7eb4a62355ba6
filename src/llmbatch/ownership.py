"""Proof of ownership: the tag every intent puts on its provider batch, and the one check
that decides whether a batch is ours (the protocol is written once, in docs/reliability.md).

An intent's tag is the store id, the intent id and a random nonce drawn when the intent is
committed. A provider keeps it wherever it can: in a batch's metadata and the upload's file
name, or in each request's custom id (`<store>-<nonce>-<attempt>`). Reconcile, the sweep,
adoption, ingest and deletion act only on a batch whose tag names one of our intents *and*
that intent's nonce: a copy of the store, or another store on the same key, has the same
ids but never the same nonces. Intents committed before migration 0005 have no nonce; their
batches are proven by the store id and intent alone, as they were.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

STORE = "llmbatch_store"
INTENT = "llmbatch_intent"
NONCE = "llmbatch_nonce"
ATTEMPT = "llmbatch_attempt"
_NONCE = re.compile(r"[0-9a-f]{8}")


def attempt_prefix(store_id: str, nonce: str | None) -> str:
    """What an intent's custom ids start with, before `-<attempt>`."""
    return f"{store_id}-{nonce}" if nonce else store_id


def custom_id(store_id: str, nonce: str | None, attempt: int) -> str:
    return f"{attempt_prefix(store_id, nonce)}-{attempt}"


def file_name(store_id: str, intent: int, nonce: str | None) -> str:
    """The upload's name: `llmbatch-<store>-<intent>[-<nonce>].jsonl`."""
    tail = f"-{nonce}" if nonce else ""
    return f"llmbatch-{store_id}-{intent}{tail}.jsonl"


def metadata(store_id: str, intent: int, nonce: str | None) -> dict[str, str]:
    meta = {STORE: store_id, INTENT: str(intent)}
    if nonce:
        meta[NONCE] = nonce
    return meta


def _number(text: str) -> int | None:
    """One of our ids, if `text` is digits a database integer holds."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def tag_of_custom_id(value: object, store_id: str) -> dict[str, str] | None:
    """The tag a custom id carries (store, nonce, attempt), if it is in our store's form."""
    if not isinstance(value, str) or not value.startswith(store_id + "-"):
        return None
    rest = value[len(store_id) + 1 :]
    nonce, _, number = rest.rpartition("-")
    if _number(number) is None or (nonce and not _NONCE.fullmatch(nonce)):
        return None
    tag = {STORE: store_id, ATTEMPT: number}
    if nonce:
        tag[NONCE] = nonce
    return tag


def tag_of_file_name(name: str, store_id: str) -> tuple[int, str | None] | None:
    """(intent, nonce) an upload's name carries, if it is one of our store's."""
    prefix = f"llmbatch-{store_id}-"
    if not name.startswith(prefix) or not name.endswith(".jsonl"):
        return None
    intent, _, nonce = name[len(prefix) : -len(".jsonl")].partition("-")
    number = _number(intent)
    if number is None or (nonce and not _NONCE.fullmatch(nonce)):
        return None
    return number, nonce or None


@dataclass(frozen=True, slots=True)
class Proof:
    """Looks up what a tag must match: the intent an attempt belongs to, an intent's nonce."""

    store_id: str
    nonce_of: Callable[[int], str | Literal[False] | None]  # False: no such intent
    intent_of_attempt: Callable[[int], int | None]

    def owner(self, tag: Mapping[str, str] | None) -> int | None:
        """The intent a batch's tag proves it belongs to, or None: not proven ours."""
        if not tag or tag.get(STORE) != self.store_id:
            return None
        intent = _number(tag.get(INTENT, ""))
        if intent is None:
            attempt = _number(tag.get(ATTEMPT, ""))
            intent = None if attempt is None else self.intent_of_attempt(attempt)
        if intent is None:
            return None
        nonce = self.nonce_of(intent)
        if nonce is False:
            return None
        return intent if tag.get(NONCE) == nonce else None
