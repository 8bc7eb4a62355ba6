"""The audit: what the store and the emulator hold, counted, and every double create
accounted for.

The engine may delete its files (`delete_files`), so the audit does not read them: the
emulator's batch list keeps every batch with its metadata (our store id and intent), and
its call log names what each create made — even one whose answer was a fault or reached
no-one — with when the call arrived and when it was answered. The store says which
attempts each intent carries.

A double create (a second provider batch for one intent) is printed with its cause: a kill,
pause or emulator restart that landed between the create's `create_started` stamp and its
answer (plus `ANSWER_GRACE`, the answer reaching the worker and its commit), a create the
client gave up on (answered after `submit_timeout`), or `unexplained`. Under a list lag
shorter than the settle window there must be none; longer, none unexplained, and no more
caused by strikes than strikes that landed in those windows.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

from crash.conditions import Conditions
from crash.crew import FINAL, rows
from crash.windows import Strike, call_kind
from llmbatch.emulator import EmulatorControl

ANSWER_GRACE = 0.5  # s: an answer logged at `at` is read and committed a little later


def all_calls(url: str) -> list[dict[str, Any]]:
    control, out = EmulatorControl(url), []
    while True:
        page = control.calls(since=out[-1]["seq"] if out else 0)
        if not page:
            return out
        out.extend(page)


def openai_batches(url: str, store_id: str) -> Iterator[dict[str, Any]]:
    """Our batches as the emulator lists them (files may be deleted; batches are not)."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=3)
    for b in client.batches.list(limit=100):
        meta = b.metadata or {}
        if meta.get("llmbatch_store") == store_id:
            yield {"id": b.id, "intent": int(meta["llmbatch_intent"]), "created": b.created_at}


def anthropic_batches(
    url: str, store_id: str, attempt_intent: dict[str, int]
) -> Iterator[dict[str, Any]]:
    """Anthropic batches carry no metadata: their results name our attempt ids (kept:
    conditions.py leaves an Anthropic queue's batches undeleted)."""
    import anthropic

    client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=3)
    for b in client.messages.batches.list(limit=100):
        ids = [r.custom_id for r in client.messages.batches.results(b.id)]
        intents = {attempt_intent[i] for i in ids if i in attempt_intent}
        if intents:
            yield {
                "id": b.id,
                "intent": min(intents),
                "intents": sorted(intents),
                "created": b.created_at.timestamp(),
            }


def gemini_batches(url: str, store_id: str) -> Iterator[dict[str, Any]]:
    """Gemini batches carry their intent in their displayName (kept: conditions.py leaves a
    Gemini queue's batches undeleted)."""
    from google import genai

    from llmbatch.providers.gemini import tag_of_display_name

    client = genai.Client(api_key="k", http_options={"base_url": url, "api_version": "v1beta"})
    for b in client.batches.list(config={"page_size": 100}):
        tag = tag_of_display_name(b.display_name, store_id)
        if tag is not None and b.name and b.create_time:
            yield {
                "id": b.name.removeprefix("batches/"),
                "intent": int(tag["llmbatch_intent"]),
                "created": b.create_time.timestamp(),
            }


def audit(
    db: str, url: str, calls: list[dict[str, Any]], strikes: list[Strike], c: Conditions
) -> dict[str, Any]:
    """Count what the store and the emulator hold; account for every double create."""
    (store_id,) = rows(db, "SELECT value FROM meta WHERE key = 'store_id'")[0]
    requests = rows(
        db,
        "SELECT r.id, r.state, COUNT(x.id) FROM requests r "
        "LEFT JOIN results x ON x.request_id = r.id GROUP BY r.id, r.state",
    )
    sent_as = rows(
        db, "SELECT a.id, a.request_id, a.batch_id, t.nonce FROM attempts a "
        "JOIN batches t ON t.id = a.batch_id",
    )  # fmt: skip
    attempts = [(a, r, b) for a, r, b, _n in sent_as]
    # custom ids as sent: `<store>-<nonce>-<attempt>` (ownership.py; no nonce before 0005)
    attempt_intent = {
        f"{store_id}-{n}-{a}" if n else f"{store_id}-{a}": int(b) for a, _r, b, n in sent_as
    }
    requests_of: dict[int, list[int]] = defaultdict(list)
    for _a, r, b in attempts:
        requests_of[int(b)].append(int(r))
    ingested = {
        str(p)
        for p, s in rows(db, "SELECT provider_batch_id, state FROM batches")
        if s == "ingested"
    }
    remote = (
        list(openai_batches(url, store_id))
        + list(anthropic_batches(url, store_id, attempt_intent))
        + list(gemini_batches(url, store_id))
    )
    per_intent: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for b in remote:
        per_intent[b["intent"]].append(b)
    sent: Counter[int] = Counter()  # request -> intents created that carried it
    for intent in per_intent:
        for r in requests_of[intent]:
            sent[r] += 1
    made = {
        str(x["made"]).removeprefix("batches/"): x  # Gemini names a batch `batches/ID`
        for x in calls
        if x.get("made") and call_kind(x["method"], x["path"]) == "create"
    }
    uploads = [x for x in calls if x.get("made") and call_kind(x["method"], x["path"]) == "upload"]
    doubles = account(db, per_intent, made, strikes, c)
    adopted = rows(db, "SELECT COUNT(*) FROM events WHERE kind = 'adopted'")[0][0]
    by_cause = Counter(d["cause"].split(" ")[0].rstrip(":") for d in doubles)
    paid_twice = sum(
        len(requests_of[i]) * (len(bs) - 1) for i, bs in per_intent.items() if len(bs) > 1
    )
    return {
        "requests": len(requests),
        "succeeded": sum(1 for _r, state, _n in requests if state == "succeeded"),
        "lost": sum(
            1
            for _r, state, n in requests
            if state not in FINAL or (state != "cancelled" and n == 0)
        ),
        # answered twice, or carried by two intents that were both created (packed twice)
        "duplicated": sum(1 for _r, _s, n in requests if n > 1)
        + sum(1 for n in sent.values() if n > 1),
        "double_creates": len(doubles),
        "double_creates_by": dict(by_cause),
        "double_create_list": doubles,
        "requests_paid_twice": paid_twice,
        "intents": len(per_intent),
        "provider_batches": len(remote),
        "create_calls": len(made),  # creates that made a batch, whatever they answered
        "creates_not_answered_in_time": sum(
            1
            for x in made.values()
            if x.get("started") and x["at"] - x["started"] > c.submit_timeout
        ),
        "upload_calls": len(uploads),
        "not_ingested": sum(1 for b in remote if b["id"] not in ingested),
        "adopted_after_strike": int(adopted),
        "strikes_in_create_windows": len(in_create_windows(db, calls, strikes)),
    }


def create_stamps(db: str) -> dict[int, list[float]]:
    """Each intent's `create_started` stamps, in order."""
    out: dict[int, list[float]] = defaultdict(list)
    for t, b in rows(
        db, "SELECT at, batch_id FROM events WHERE kind = 'create_started' ORDER BY at"
    ):
        out[int(b)].append(float(t))
    return out


def window_of(stamps: list[float], call: dict[str, Any]) -> tuple[float, float]:
    """[the stamp the create started under, its answer + grace]."""
    started = float(call.get("started") or call["at"])
    before = [t for t in stamps if t <= started + 0.05] or stamps[:1] or [started]
    return before[-1], float(call["at"]) + ANSWER_GRACE


def in_create_windows(db: str, calls: list[dict[str, Any]], strikes: list[Strike]) -> set[int]:
    """The strikes (by index) that landed between some create's stamp and its answer."""
    every = sorted(t for ts in create_stamps(db).values() for t in ts)
    windows = []
    for x in calls:
        if call_kind(x["method"], x["path"]) != "create":
            continue
        # the stamp the call belongs to is the last one before it, whichever intent
        j = bisect.bisect_right(every, float(x.get("started") or x["at"]) + 0.05)
        if j:
            windows.append((every[j - 1], float(x["at"]) + ANSWER_GRACE))
    return {i for i, s in enumerate(strikes) if any(lo <= s.at <= hi for lo, hi in windows)}


def account(
    db: str,
    per_intent: dict[int, list[dict[str, Any]]],
    made: dict[str, dict[str, Any]],
    strikes: list[Strike],
    c: Conditions,
) -> list[dict[str, Any]]:
    """One entry per double create, with what caused it. Of an intent's n batches, each
    but the last-made one lost its record; its create's window says why."""
    stamps = create_stamps(db)
    used: set[int] = set()
    out = []
    for intent, batches in sorted(per_intent.items()):
        batches = sorted(batches, key=lambda b: (b["created"], b["id"]))
        for b in batches[:-1]:
            call = made.get(b["id"])
            entry: dict[str, Any] = {"intent": intent, "batches": [x["id"] for x in batches]}
            if call is None:
                near = [
                    i
                    for i, s in enumerate(strikes)
                    if s.kind == "restart" and abs(s.at - b["created"]) < 10 and i not in used
                ]
                cause = "unexplained: no call made it"
                if near:
                    cause = f"restart #{near[0]}: the emulator died before logging it"
                used.update(near[:1])
            else:
                lo, hi = window_of(stamps.get(intent, []), call)
                hit = [i for i, s in enumerate(strikes) if lo <= s.at <= hi and i not in used]
                answered = float(call["at"]) - lo
                if hit:
                    s = strikes[hit[0]]
                    used.add(hit[0])
                    cause = (
                        f"{s.kind} #{hit[0]} {s.at - lo:.2f} s after create_started; "
                        f"the create answered {answered:.2f} s after it"
                    )
                elif answered > c.submit_timeout:
                    cause = f"timeout: the create answered {answered:.2f} s after create_started"
                elif int(call["status"]) >= 300:
                    cause = f"fault: the create made it and answered {call['status']}"
                else:
                    cause = f"unexplained: answered {call['status']} {answered:.2f} s after"
            entry["cause"] = cause
            out.append(entry)
    return out


def print_doubles(doubles: list[dict[str, Any]]) -> None:
    for d in doubles:
        print("double create: " + json.dumps(d), flush=True)
