"""Input-token error of `llmbatch estimate` per provider, on the shipped request set.

    python benchmarks/bench_estimate.py [FILE] [--claude-tokenizer PATH]

References, each counted independently of llmbatch.estimate:
- OpenAI: tiktoken (the real tokenizer) with OpenAI's published chat framing. tiktoken cannot
  download its vocabularies here, so it is given bpe-openai's, after checking their sha256
  against the hashes tiktoken itself expects of OpenAI's files.
- Anthropic: the last tokenizer Anthropic published (tokenizer.json of the anthropic SDK
  <= 0.38, MIT; pass its path or set LLMBATCH_CLAUDE_TOKENIZER; needs `tokenizers`), with
  the same framing as the estimate. It predates Claude 3, so it is a calibration target, not
  the truth; the error against today's API is unknown.
- Both: the emulator's token rules (emulator/synth.py, emulator/anthropic_synth.py), which
  the emulator bills by.

Prints one JSON line: per provider, the aggregate error (estimate / reference - 1) and the
mean absolute per-request error, in %.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from llmbatch.emulator.anthropic_synth import count_prompt
from llmbatch.emulator.synth import prompt_tokens
from llmbatch.estimate import ANTHROPIC_BASE, ANTHROPIC_PER_MESSAGE, input_tokens

DEFAULT_SET = Path(__file__).with_name("data") / "estimate_set.jsonl"
OPENAI_HASHES = {  # tiktoken_ext.openai_public's expected_hash of OpenAI's published files
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}


def vocabulary_sha256(name: str) -> str:
    """sha256 of bpe-openai's vocabulary written in OpenAI's .tiktoken file format."""
    import bpe_openai

    ranks: dict[bytes, int] = bpe_openai.get_encoding(name)._mergeable_ranks
    lines = (base64.b64encode(t) + b" " + str(r).encode() + b"\n" for t, r in ranks.items())
    ordered = sorted(lines, key=lambda ln: int(ln.rsplit(b" ", 1)[1]))
    return hashlib.sha256(b"".join(ordered)).hexdigest()


def tiktoken_encoding(name: str) -> Any:
    """tiktoken's own Encoding for `name`, fed bpe-openai's (hash-checked) vocabulary."""
    import bpe_openai
    import tiktoken
    from tiktoken_ext import openai_public

    if vocabulary_sha256(name) != OPENAI_HASHES[name]:
        raise SystemExit(f"bpe-openai's {name} differs from OpenAI's published file")
    ranks = bpe_openai.get_encoding(name)._mergeable_ranks
    real = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = lambda *a, **k: ranks
    try:
        spec = getattr(openai_public, name)()
    finally:
        openai_public.load_tiktoken_bpe = real
    return tiktoken.Encoding(**spec)


def openai_reference(enc_for: Callable[[str], Any]) -> Callable[[str, str, dict[str, Any]], int]:
    """OpenAI's published counting rule (the cookbook's num_tokens_from_messages) on tiktoken."""

    def count(endpoint: str, model: str, body: dict[str, Any]) -> int:
        enc = enc_for(model)

        def t(v: Any) -> int:
            if not v:
                return 0
            s = v if isinstance(v, str) else orjson.dumps(v).decode()
            return len(enc.encode_ordinary(s))

        def msgs(ms: list[dict[str, Any]]) -> int:
            return sum(3 + t(m["role"]) + t(m["content"]) for m in ms)

        if endpoint == "/v1/embeddings":
            inp = body["input"]
            return sum(t(i) for i in (inp if isinstance(inp, list) else [inp]))
        if endpoint == "/v1/responses":
            inp = body["input"]
            n = 3 + (3 + t(inp) if isinstance(inp, str) else msgs(inp))
            return n + (3 + t(body["instructions"]) if "instructions" in body else 0)
        extra = t(body.get("tools")) + t(body.get("response_format"))
        return 3 + msgs(body["messages"]) + extra

    return count


def claude_reference(path: str) -> Callable[[str, str, dict[str, Any]], int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)

    def t(v: Any) -> int:
        if not v:
            return 0
        s = v if isinstance(v, str) else orjson.dumps(v).decode()
        return len(tok.encode(s).ids)

    def count(_endpoint: str, _model: str, p: dict[str, Any]) -> int:
        n = t(p.get("system")) + sum(t(m["content"]) for m in p["messages"])
        turns = len(p["messages"]) + ("system" in p)
        return n + t(p.get("tools")) + ANTHROPIC_PER_MESSAGE * turns + ANTHROPIC_BASE

    return count


def emulator_rule(endpoint: str, _model: str, body: dict[str, Any]) -> int:
    if endpoint == "/v1/messages":
        return count_prompt(body).tokens
    kind = {"/v1/chat/completions": "chat", "/v1/responses": "responses"}.get(endpoint)
    return prompt_tokens(kind or "embeddings", body)


def load(path: Path) -> list[tuple[str, str, str, dict[str, Any]]]:
    out = []
    for raw in path.read_bytes().splitlines():
        o = orjson.loads(raw)
        if "params" in o:
            out.append(("anthropic", "/v1/messages", o["params"]["model"], o["params"]))
        else:
            out.append(("openai", o["url"], o["body"]["model"], o["body"]))
    return out


def errors(
    reqs: list[tuple[str, str, str, dict[str, Any]]],
    provider: str,
    reference: Callable[[str, str, dict[str, Any]], int],
) -> dict[str, float | int]:
    est = ref = 0
    per: list[float] = []
    for prov, endpoint, model, body in reqs:
        if prov != provider:
            continue
        e, r = input_tokens(endpoint, model, body), reference(endpoint, model, body)
        est, ref = est + e, ref + r
        per.append(abs(e - r) / r if r else 0.0)
    return {
        "requests": len(per),
        "estimate_tokens": est,
        "reference_tokens": ref,
        "aggregate_error_pct": round((est / ref - 1) * 100, 2),
        "mean_abs_error_pct": round(sum(per) / len(per) * 100, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", nargs="?", default=str(DEFAULT_SET))
    ap.add_argument("--claude-tokenizer", default=os.environ.get("LLMBATCH_CLAUDE_TOKENIZER"))
    ap.add_argument(
        "--small", action="store_true", help="what CI runs: the shipped set is already small"
    )
    args = ap.parse_args()
    reqs = load(Path(args.file))
    out: dict[str, Any] = {"bench": "estimate", "requests": len(reqs), "target_pct": 5.0}
    t = time.perf_counter()
    for _prov, endpoint, model, body in reqs:
        input_tokens(endpoint, model, body)
    out["estimate_seconds"] = round(time.perf_counter() - t, 3)
    encs = {n: tiktoken_encoding(n) for n in OPENAI_HASHES}
    from llmbatch.estimate import encoding_name

    out["openai_vs_tiktoken"] = errors(
        reqs, "openai", openai_reference(lambda m: encs[encoding_name(m)])
    )
    if args.claude_tokenizer:
        out["anthropic_vs_claude_tokenizer"] = errors(
            reqs, "anthropic", claude_reference(args.claude_tokenizer)
        )
    else:
        out["anthropic_vs_claude_tokenizer"] = "skipped: pass --claude-tokenizer PATH"
    out["openai_vs_emulator"] = errors(reqs, "openai", emulator_rule)
    out["anthropic_vs_emulator"] = errors(reqs, "anthropic", emulator_rule)
    print(json.dumps(out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
