"""Ingest: a finished batch's result files into per-attempt outcomes.

A line is keyed by its `custom_id`, which is our attempt id (`<store_id>-<n>`). A line that
is not JSON, or carries an id that is not ours, is an anomaly: recorded, never dropped silently.
A batch counts as ingested only when its lines account for every request (else the files are
downloaded again, a few times); an attempt with no line goes back to the queue uncharged.
`Ingesting` is the engine's part that does it.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson

from llmbatch.errors import RejectedError, TransientError
from llmbatch.ledger import Tally
from llmbatch.pricing import model_prices
from llmbatch.providers.base import BatchStatus, ResultsGone, read_lines
from llmbatch.retry import decide
from llmbatch.store.batching import OpenBatch, Outcome
from llmbatch.usage import UsageRecord, read_usage

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from llmbatch.engine import EngineSettings, TickReport
    from llmbatch.providers import Provider
    from llmbatch.store import Store


@dataclass(frozen=True, slots=True)
class Finding:
    """What one result line says about one attempt."""

    attempt_id: int
    ok: bool
    status_code: int | None
    provider_request_id: str | None
    body: bytes | None
    error_code: str | None
    error_type: str | None
    error_message: str | None
    input_tokens: int | None
    output_tokens: int | None
    usage: UsageRecord | None = None
    model: str | None = None  # the model that answered, where the line says (Anthropic)


class Anomaly(ValueError):
    """A result line that cannot be mapped to one of our attempts."""


def attempt_id_of(custom_id: object, store_id: str) -> int:
    """Our attempt number from a custom_id we sent; Anomaly for anything else."""
    prefix = store_id + "-"
    if not isinstance(custom_id, str) or not custom_id.startswith(prefix):
        raise Anomaly(f"custom_id {custom_id!r} is not one of this store's attempt ids")
    try:
        return int(custom_id[len(prefix) :])
    except ValueError:
        raise Anomaly(f"custom_id {custom_id!r} is not one of this store's attempt ids") from None


def parse_line(
    line: bytes, store_id: str, endpoint: str | None = None, provider: str = "openai"
) -> Finding:
    """Parse one output- or error-file line; raise Anomaly if it is not ours or not readable."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise Anomaly(f"result line is not JSON ({exc}): {line[:80]!r}") from None
    if not isinstance(obj, dict):
        raise Anomaly(f"result line is not a JSON object: {line[:80]!r}")
    attempt = attempt_id_of(obj.get("custom_id"), store_id)
    if provider == "anthropic":
        return _anthropic_line(attempt, obj)
    response = obj.get("response")
    error = obj.get("error")
    if isinstance(response, dict):
        status = response.get("status_code")
        status = int(status) if isinstance(status, int) else None
        body = response.get("body")
        rid = response.get("request_id")
        rid = str(rid) if rid is not None else None
        if status is not None and 200 <= status < 300 and isinstance(body, dict):
            u = read_usage(body.get("usage"), provider=provider, endpoint=endpoint)
            return Finding(
                attempt,
                True,
                status,
                rid,
                orjson.dumps(body),
                None,
                None,
                None,
                u.input,
                u.output,
                u,
            )
        err = body.get("error") if isinstance(body, dict) else None
        err = err if isinstance(err, dict) else {}
        return Finding(
            attempt, False, status, rid, orjson.dumps(body) if body is not None else None,
            _s(err.get("code")) or (f"http_{status}" if status else "error"), _s(err.get("type")),
            _s(err.get("message")) or f"HTTP {status}", None, None,
        )  # fmt: skip
    if isinstance(error, dict):
        code = _s(error.get("code")) or "error"
        return Finding(
            attempt,
            False,
            None,
            None,
            None,
            code,
            code,
            _s(error.get("message")) or code,
            None,
            None,
        )
    raise Anomaly(f"result line for {obj.get('custom_id')!r} has neither a response nor an error")


ANTHROPIC_ENDED = {"canceled": "batch_cancelled", "expired": "batch_expired"}


def _anthropic_line(attempt: int, obj: dict[str, object]) -> Finding:
    """`{"custom_id", "result": {"type": succeeded|errored|canceled|expired, ...}}`."""
    result = obj.get("result")
    kind = result.get("type") if isinstance(result, dict) else None
    if isinstance(result, dict) and kind == "succeeded" and isinstance(result.get("message"), dict):
        message = result["message"]
        u = read_usage(message.get("usage"), provider="anthropic")
        return Finding(
            attempt, True, 200, _s(message.get("id")), orjson.dumps(message), None, None, None,
            u.input, u.output, u, _s(message.get("model")),
        )  # fmt: skip
    if isinstance(result, dict) and kind == "errored":
        envelope = result.get("error")
        envelope = envelope if isinstance(envelope, dict) else {}
        err = envelope.get("error")
        err = err if isinstance(err, dict) else {}
        code = _s(err.get("type")) or "error"
        return Finding(
            attempt, False, None, _s(envelope.get("request_id")), orjson.dumps(envelope), code,
            code, _s(err.get("message")) or code, None, None,
        )  # fmt: skip
    if isinstance(kind, str) and kind in ANTHROPIC_ENDED:
        code = ANTHROPIC_ENDED[kind]
        return Finding(attempt, False, None, None, None, code, code, f"request {kind}", None, None)
    raise Anomaly(f"result line for {obj.get('custom_id')!r} has no known result type")


def _s(v: object) -> str | None:
    return None if v is None else str(v)


MAX_DOWNLOAD_TRIES = 3


class Ingesting:
    """The engine's ingest steps (mixed into Engine, whose state they use)."""

    store: Store
    settings: EngineSettings
    workdir: Path
    timings: dict[str, float]
    _download_tries: dict[int, int]
    _not_before: dict[int, float]
    _group_strikes: dict[tuple[str, ...], int]
    _group_cap: dict[tuple[str, ...], int]
    _batch_key: Callable[[OpenBatch], tuple[str, ...]]
    provider: Callable[[str], Provider]
    _later: Callable[[int, float, TransientError, TickReport], None]
    _mark_ingested: Callable[[OpenBatch, float, int, str], None]
    _batch_level_failure: Callable[[OpenBatch, float, str], None]
    _count: Callable[[OpenBatch, Tally, float, int, TickReport], None]

    def _ingest(self, b: OpenBatch, now: float, token: int, report: TickReport) -> None:
        provider = self.provider(b.provider)
        if b.state == "failed" and not b.output_file_id:
            if b.intent_id is not None:  # an adopted duplicate: its intent's own batch decides
                self._mark_ingested(b, now, token, "adopted batch failed validation")
                return
            self._failed_validation(b, now, token, report)
            return
        status = BatchStatus(
            b.provider_batch_id or "", b.state, b.provider_status or b.state, b.request_count,
            b.completed_count, b.failed_count, b.input_file_id, b.output_file_id, b.error_file_id,
        )  # fmt: skip
        folder = self.workdir / f"ingest-{b.id}"
        folder.mkdir(exist_ok=True)
        started = time.perf_counter()
        try:
            files = provider.download(status, folder)
        except TransientError as exc:
            self._later(b.id, now, exc, report)
            return
        except ResultsGone as exc:
            self._archived(b, now, token, str(exc), report)
            return
        except RejectedError as exc:
            # A result file that is gone (404): another worker that took the lease over may have
            # ingested the batch and deleted it (then this worker's next write fails and it stops
            # acting), or the provider let it expire. Look again a few times; then its requests go
            # back to the queue as results that never arrived.
            tries = self._download_tries.get(b.id, 0) + 1
            self._download_tries[b.id] = tries
            if tries < MAX_DOWNLOAD_TRIES:
                self._later(b.id, now, TransientError(str(exc)), report)
                return
            self.store.note("anomaly", b.id, f"result files gone: {exc}")
            files = []
        finally:
            self.timings["download"] += time.perf_counter() - started
        started = time.perf_counter()
        lines = anomalies = 0
        chunk: list[Finding] = []
        seen: set[int] = set()  # one int per request of one batch (≤ 100,000)
        tally = Tally(b.provider, b.model, now)  # what its lines say it used (ledger.py)
        for _kind, line in read_lines(files):
            lines += 1
            try:
                finding = parse_line(line, self.store.store_id, b.endpoint, b.provider)
                if finding.attempt_id in seen:  # the first is kept; never silently dropped
                    cid = f"{self.store.store_id}-{finding.attempt_id}"
                    raise Anomaly(f"a second result line for custom_id {cid!r}; the first is kept")
                seen.add(finding.attempt_id)
                tally.add(finding)
                chunk.append(finding)
            except Anomaly as exc:
                anomalies += 1
                self.store.note("anomaly", b.id, str(exc))
            if len(chunk) >= self.settings.ingest_chunk:
                report.outcomes += self._apply(b, chunk, now, token)
                chunk = []
        report.outcomes += self._apply(b, chunk, now, token)
        report.anomalies += anomalies
        self.timings["ingest"] += time.perf_counter() - started
        shutil.rmtree(folder, ignore_errors=True)
        tries = self._download_tries.get(b.id, 0) + 1
        if (lines < b.request_count or anomalies) and tries < MAX_DOWNLOAD_TRIES:
            self._download_tries[b.id] = tries
            self._not_before[b.id] = now + self.settings.backoff_seconds
            report.notes.append(
                f"batch {b.provider_batch_id}: {lines:,} result lines for {b.request_count:,} requests "
                f"({anomalies} unreadable); downloading again"
            )
            return
        missing = self.store.unfinished_attempts(b.id) if b.intent_id is None else []
        if missing:
            why = (
                "no result line for this request" if b.state == "completed" else f"batch {b.state}"
            )
            kind = "batch_expired" if b.state in ("expired", "cancelled") else "missing_result"
            self._apply_waiting(b, [(a, kind, why) for a, _r, _l in missing], now, token)
        self._count(b, tally, now, token, report)
        self._mark_ingested(b, now, token, f"{lines:,} lines, {anomalies} anomalies")
        if b.state == "completed":  # the group is healthy again: full-size batches
            group = self._batch_key(b)
            self._group_strikes.pop(group, None)
            self._group_cap.pop(group, None)
        report.ingested_batches += 1
        if self.settings.delete_files:
            try:
                provider.delete_files(
                    [f for f in (b.input_file_id, b.output_file_id, b.error_file_id) if f]
                )
            except TransientError as exc:
                report.notes.append(f"clean-up later: {exc}")

    def _archived(self, b: OpenBatch, now: float, token: int, why: str, report: TickReport) -> None:
        """The provider archived the results before we read them: the requests still waiting
        go back to the queue (`archived = "requeue"`, counted as an expiry) or fail with the
        reason "archived" (`archived = "fail"`); the batch shows as archived in `status`."""
        fail = self.settings.archived == "fail"
        message = "the provider archived the results before they were read"
        outs = [
            Outcome(a, "failed", error_code="archived", error_message=message)
            if fail
            else Outcome(
                a, "requeue", error_code="archived", error_message=message, charge_expiry=1
            )
            for a, _r, _l in (self.store.unfinished_attempts(b.id) if b.intent_id is None else [])
        ]
        if b.cancel_requested_at is not None:
            outs = [dataclasses.replace(o, kind="cancelled") for o in outs]
        for i in range(0, len(outs), self.settings.ingest_chunk):
            self.store.apply_outcomes(b.id, outs[i : i + self.settings.ingest_chunk], now, token)
        gone = BatchStatus(
            b.provider_batch_id or "", b.state, "archived", b.request_count, b.completed_count,
            b.failed_count,
        )  # fmt: skip
        self.store.update_batch(b.id, gone, now, token)
        self.store.note("archived", b.id, why)
        self._mark_ingested(
            b, now, token, f"archived: {len(outs):,} requests {'failed' if fail else 'requeued'}"
        )
        report.ingested_batches += 1
        report.notes.append(f"{why}; {len(outs):,} requests {'failed' if fail else 'queued again'}")

    def _apply(self, b: OpenBatch, findings: list[Finding], now: float, token: int) -> int:
        if not findings:
            return 0
        # Counters are needed only to decide about errors; the store skips attempts that
        # already have an outcome (a re-download) or belong to another batch.
        errors = [f.attempt_id for f in findings if not f.ok]
        info = self.store.attempt_info(b.attempts_of, errors) if errors else {}
        outs: list[Outcome] = []
        day = datetime.fromtimestamp(now, UTC)
        prices = {b.model: model_prices(b.provider, b.model or "", day)}
        for f in findings:
            if f.ok:
                # A batch of several models records none: each line names the one that answered.
                model = b.model or f.model
                if model not in prices:
                    prices[model] = model_prices(b.provider, model or "", day)
                outs.append(Outcome(f.attempt_id, "succeeded", f.status_code, f.provider_request_id, f.body,
                                    input_tokens=f.input_tokens, output_tokens=f.output_tokens, usage=f.usage,
                                    price_tier=prices[model].tier(f.input_tokens or 0)))  # fmt: skip
                continue
            a = info.get(f.attempt_id)
            if a is None:
                continue
            # One jitter per batch: its retries come due together and travel in one new batch.
            d = decide(self.settings.retry, status_code=f.status_code, error_type=f.error_type or f.error_code,
                       attempts=a.attempts, expiries=a.expiries, now=now, rng=random.Random(b.id))  # fmt: skip
            outs.append(Outcome(
                f.attempt_id, d.kind, f.status_code, f.provider_request_id, f.body, f.error_code,
                f"{f.error_message} ({d.reason})" if d.reason else f.error_message, not_before=d.not_before,
                charge_expiry=1 if d.kind == "requeue" else 0,
            ))  # fmt: skip
        if b.cancel_requested_at is not None:  # cancelled by the user: nothing goes back
            outs = [
                dataclasses.replace(o, kind="cancelled") if o.kind in ("retry", "requeue") else o
                for o in outs
            ]
        applied = self.store.apply_outcomes(b.attempts_of, outs, now, token)
        if applied < len(findings):  # a re-download, or lines naming attempts of other batches
            for stranger in self.store.attempts_not_in_batch(
                b.attempts_of, [f.attempt_id for f in findings]
            ):
                self.store.note(
                    "anomaly",
                    b.id,
                    f"result line for attempt {stranger}, which is not in this batch",
                )
        return applied

    def _apply_waiting(
        self, b: OpenBatch, items: list[tuple[int, str, str]], now: float, token: int
    ) -> None:
        findings = [
            Finding(a, False, None, None, None, code, code, why, None, None)
            for a, code, why in items
        ]
        for i in range(0, len(findings), self.settings.ingest_chunk):
            self._apply(b, findings[i : i + self.settings.ingest_chunk], now, token)

    def _failed_validation(self, b: OpenBatch, now: float, token: int, report: TickReport) -> None:
        """Line errors fail exactly those requests (an unknown model: all of them); everything
        else goes back unharmed."""
        by_line = {int(e["line"]): e for e in b.errors if isinstance(e.get("line"), int)}
        # An unknown model is reported once, on the first line, but it is every line's model:
        # failing one request per batch would take as many batches as requests.
        unknown_model = next((e for e in b.errors if e.get("code") == "model_not_found"), None)
        outs = []
        for attempt_id, _rid, line in self.store.unfinished_attempts(b.id):
            e = by_line.get(line) or unknown_model
            if e is not None:
                outs.append(
                    Outcome(
                        attempt_id,
                        "failed",
                        error_code=str(e.get("code")),
                        error_message=str(e.get("message")),
                    )
                )
            else:
                outs.append(
                    Outcome(
                        attempt_id,
                        "requeue",
                        error_code="batch_failed",
                        error_message="its batch failed validation",
                    )
                )
        if b.cancel_requested_at is not None:
            outs = [
                dataclasses.replace(o, kind="cancelled") if o.kind == "requeue" else o for o in outs
            ]
        for i in range(0, len(outs), self.settings.ingest_chunk):
            self.store.apply_outcomes(b.id, outs[i : i + self.settings.ingest_chunk], now, token)
        codes = ", ".join(sorted({str(e.get("code")) for e in b.errors})) or "no reason given"
        if not by_line:
            self._batch_level_failure(b, now, codes)
        self._mark_ingested(b, now, token, f"failed validation: {codes}")
        report.ingested_batches += 1
        report.notes.append(f"batch {b.provider_batch_id} failed validation ({codes})")
