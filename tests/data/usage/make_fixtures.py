"""Write the usage fixtures `llmbatch analyze` is tested on (seeded; the same files each run).

    python tests/data/usage/make_fixtures.py

- spec_example.json: the response example of GET /v1/organization/usage/completions in
  openai/openai-openapi's openapi.yaml, verbatim (not grouped: model and batch are null).
- pages.jsonl: two pages of that endpoint with group_by=model,batch,project_id (one a line),
  each result shaped like the spec's example; 14 daily buckets, one of them empty.
- pages_concatenated.json: the same pages pretty-printed back to back.
- calls.jsonl: 2,000 per-call records over 10 days (tags, endpoints, a batched share, an
  unknown model).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
DAY = 86400
START = 1730419200  # 2024-11-01, the spec example's start_time

SPEC_EXAMPLE = {
    "object": "page",
    "data": [
        {
            "object": "bucket",
            "start_time": 1730419200,
            "end_time": 1730505600,
            "results": [
                {
                    "object": "organization.usage.completions.result",
                    "input_tokens": 1000,
                    "input_cached_tokens": 400,
                    "input_cache_write_tokens": 100,
                    "input_uncached_tokens": 500,
                    "output_tokens": 500,
                    "input_text_tokens": 400,
                    "output_text_tokens": 400,
                    "input_cached_text_tokens": 300,
                    "input_audio_tokens": 50,
                    "input_cached_audio_tokens": 50,
                    "output_audio_tokens": 50,
                    "input_image_tokens": 50,
                    "input_cached_image_tokens": 50,
                    "output_image_tokens": 50,
                    "num_model_requests": 5,
                    "project_id": None,
                    "user_id": None,
                    "api_key_id": None,
                    "model": None,
                    "batch": None,
                    "service_tier": None,
                }
            ],
        }
    ],
    "has_more": True,
    "next_page": "page_AAAAAGdGxdEiJdKOAAAAAGcqsYA=",
}
# (model, project, batch, input, cached, output, requests) per day
GROUPS = [
    ("gpt-4o-mini", "proj_reviews", False, 2_000_000, 400_000, 300_000, 4000),
    ("gpt-4o-mini", "proj_reviews", True, 6_000_000, 0, 900_000, 12000),
    ("gpt-4o", "proj_chat", False, 1_000_000, 200_000, 250_000, 900),
    ("gpt-4.1-mini", "proj_evals", False, 3_000_000, 0, 500_000, 1500),
]


def result(model: str, project: str, batch: bool, inp: int, cached: int, out: int, n: int) -> dict:
    r = dict(SPEC_EXAMPLE["data"][0]["results"][0])  # type: ignore[index]
    r.update(
        input_tokens=inp, input_cached_tokens=cached, input_cache_write_tokens=0,
        input_uncached_tokens=inp - cached, output_tokens=out, input_text_tokens=inp - cached,
        output_text_tokens=out, input_cached_text_tokens=cached, input_audio_tokens=0,
        input_cached_audio_tokens=0, output_audio_tokens=0, input_image_tokens=0,
        input_cached_image_tokens=0, output_image_tokens=0, num_model_requests=n,
        project_id=project, model=model, batch=batch,
    )  # fmt: skip
    return r


def pages() -> list[dict]:
    buckets = []
    for d in range(14):
        results = [] if d == 6 else [result(*g) for g in GROUPS]  # day 7: nothing used
        buckets.append({"object": "bucket", "start_time": START + d * DAY,
                        "end_time": START + (d + 1) * DAY, "results": results})  # fmt: skip
    return [
        {"object": "page", "data": buckets[:7], "has_more": True, "next_page": "page_2"},
        {"object": "page", "data": buckets[7:], "has_more": False, "next_page": None},
    ]


def calls() -> list[dict]:
    rng = random.Random(11)
    models = [("gpt-4o-mini", "/v1/chat/completions"), ("gpt-4o", "/v1/chat/completions"),
              ("claude-haiku-4-5", "/v1/messages"), ("text-embedding-3-small", "/v1/embeddings"),
              ("ft:gpt-4o-mini:acme::unknown", "/v1/chat/completions")]  # fmt: skip
    out = []
    for i in range(2000):
        model, endpoint = models[i % len(models)]
        inp = rng.randrange(50, 4000)
        rec = {"timestamp": START + rng.randrange(10 * DAY), "model": model, "input_tokens": inp,
               "output_tokens": 0 if "embedding" in model else rng.randrange(1, 800),
               "tag": rng.choice(("support-bot", "nightly-tagging", "evals")), "endpoint": endpoint}  # fmt: skip
        if i % 7 == 0:
            rec["batch"] = True
        if i % 3 == 0:
            rec["cached_tokens"] = inp // 4
        out.append(rec)
    out[0]["timestamp"] = "2024-11-01T00:00:00Z"  # ISO 8601 is accepted too
    return out


def main() -> None:
    (HERE / "spec_example.json").write_text(json.dumps(SPEC_EXAMPLE, indent=4) + "\n")
    ps = pages()
    (HERE / "pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in ps))
    (HERE / "pages_concatenated.json").write_text("".join(json.dumps(p, indent=2) for p in ps))
    (HERE / "calls.jsonl").write_text("".join(json.dumps(c) + "\n" for c in calls()))


if __name__ == "__main__":
    main()
