"""What validation learns of a batch's plain chat lines, kept so that processing parses no
JSON.

`scan` parses every request line to validate it and count its prompt. A chat line that
asks for plain text in one choice (a batch's usual line) has a reply that depends on little
more: the body's hash, the prompt tokens, the cap, and the ids made from the batch id and
the `custom_id`. `write` stores one record of these per line, in processing order (`.pre`,
with the records' offsets in `.prx`), so the worker reads a chunk's records with one read
and writes each reply from its template (`chat_synth.plain_chat_reply`). A line that asks
for more (tools, a schema, several choices, a bad cap) has a one-byte record, `FULL`: the
worker reads it from the input and answers it in full, as it does every line of a batch
validated before these files existed. The output is the same byte for byte either way.
"""

from __future__ import annotations

import hashlib
import os
import struct
from array import array
from pathlib import Path
from typing import Any

import orjson

from llmbatch.emulator.chat_synth import is_plain_chat
from llmbatch.emulator.envelope import RequestError

#: A plain line's record starts with: its cap's key (1 + `KEYS` index), the body hash, the
#: request's failure draw (the first 4 bytes of its ids), its prompt tokens and its cap
#: (0: none); then the hex of its 32 id bytes, its reply id and its `custom_id` as JSON.
HEAD = struct.Struct("<B16sIII")
IDS = slice(HEAD.size, HEAD.size + 64)
REPLY_ID = slice(HEAD.size + 64, HEAD.size + 64 + 33)
CUSTOM_ID = HEAD.size + 64 + 33
KEYS: tuple[str | None, ...] = (None, "max_completion_tokens", "max_tokens")
FULL = b"\x00"
_LARGEST = 0xFFFFFFFE


def request_ids(salt: str, custom_id: str) -> bytes:
    """The 32 bytes a request's `batch_req_` id, `req_` id and failure draw come from."""
    return hashlib.blake2b(f"{salt}:{custom_id}".encode(), digest_size=32).digest()


class Preparer:
    """Makes the records of one batch's lines (`salt`: the batch id)."""

    def __init__(self, salt: str) -> None:
        self.salt = salt
        self._salt = salt.encode()
        # `request_ids` hashes `salt:custom_id`: the prefix is hashed once, then copied
        self._ids = hashlib.blake2b(f"{salt}:".encode(), digest_size=32)

    def record(self, body: dict[str, Any], custom_id: str, prompt: int) -> bytes:
        """One chat line's record (`FULL` unless it asks for plain text in one choice).
        `cap_of` and `is_plain_chat`, inline for the usual line; `FULL` where they would
        raise, so the worker raises it again, in the same order as ever."""
        n_choices = body.get("n") or 1
        if type(n_choices) is not int or n_choices != 1:
            return FULL
        key: str | None = "max_completion_tokens"
        cap = body.get("max_completion_tokens")
        if cap is None:
            key, cap = "max_tokens", body.get("max_tokens")
            if cap is None:
                key = None
        if cap is not None and (type(cap) is not int or not 1 <= cap <= _LARGEST):
            return FULL
        h = hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), digest_size=16)
        digest = h.digest()
        if "response_format" in body or "tools" in body or "tool_choice" in body:
            try:
                if not is_plain_chat(body, digest):
                    return FULL
            except RequestError:
                return FULL
        if prompt > _LARGEST:
            return FULL
        ids = self._ids.copy()
        ids.update(custom_id.encode())
        draw = ids.digest()
        reply = hashlib.blake2b(digest + self._salt, digest_size=12).hexdigest()
        return b"".join(
            (
                HEAD.pack(
                    KEYS.index(key) + 1, digest, int.from_bytes(draw[:4], "big"), prompt, cap or 0
                ),
                draw.hex().encode(),
                b"chatcmpl-",
                reply.encode(),
                orjson.dumps(custom_id),
            )
        )


def paths(index_path: Path) -> tuple[Path, Path]:
    """Where a batch's records and their offsets go, beside its line index."""
    return index_path.with_suffix(".pre"), index_path.with_suffix(".prx")


def write(index_path: Path, records: list[bytes], order: array[int]) -> None:
    """Store `records` (in input order) in processing `order`, piece by piece (no copy of
    them all at once: a 50,000-line batch's records are ~8 MB)."""
    data, offsets = paths(index_path)
    ends = array("Q", [0])
    end = 0
    with data.open("wb") as f:
        for i in order:
            record = records[i]
            f.write(record)
            end += len(record)
            ends.append(end)
    offsets.write_bytes(ends.tobytes())


def remove(index_path: Path) -> None:
    for path in paths(index_path):
        path.unlink(missing_ok=True)


class Prepared:
    """One batch's records, read by processing position."""

    def __init__(self, index_path: Path) -> None:
        data, offsets = paths(index_path)
        self.offsets = array("Q")
        self.offsets.frombytes(offsets.read_bytes())
        self.fd = os.open(data, os.O_RDONLY)

    @property
    def total(self) -> int:
        return len(self.offsets) - 1

    def records(self, start: int, n: int) -> list[bytes]:
        """The records of positions `start` to `start + n`, read at once."""
        offsets, base = self.offsets, self.offsets[start]
        data = os.pread(self.fd, offsets[start + n] - base, base)
        return [data[offsets[i] - base : offsets[i + 1] - base] for i in range(start, start + n)]

    def close(self) -> None:
        os.close(self.fd)


def exists(index_path: Path) -> bool:
    return all(p.exists() for p in paths(index_path))
