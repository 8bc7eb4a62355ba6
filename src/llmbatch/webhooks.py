"""Webhooks: a signed POST when a batch's results are ingested and when a queue finishes,
delivered at least once from an outbox in the store.

Events are added to the outbox (`store/archive.py`) in the step that marks a batch ingested,
tied to that batch: one is sent only once its batch is ingested, and a crash in between
re-adds the same event id, never a second one. The engine's tick ends by delivering what is
due, within `tick_seconds`; a receiver that fails (no answer, not 2xx, slow) gets the event
again later, the pause doubling up to `max_backoff_seconds`, with the error in the store.
The worker never waits on a receiver beyond `timeout`.

Signing follows Standard Webhooks (standardwebhooks.com): headers `webhook-id` (the event id,
the same on every delivery: receivers dedupe by it), `webhook-timestamp` (Unix seconds of
this delivery) and `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of
`{id}.{timestamp}.{body}`). The secret comes from the environment variable `secret_env`
names, read when an event is sent; it is never in the config file, the store, a log or an
error. A secret of the form `whsec_<base64>` is keyed by its decoded bytes, as the Standard
Webhooks libraries do, so they can verify our signatures; any other by its UTF-8 bytes.
`verify()` is the receiver's side.

Payload (version 1; fields are only ever added within a version):

    {"type": "batch.ingested" | "queue.finished", "version": 1, "id": <event id>,
     "created_at": <ISO 8601>, "store_id": ..., "data": {...}}

- `batch.ingested` data: `batch` {id, provider, provider_batch_id, endpoint, model, state,
  request_count, completed, failed}, `queues` [{queue, unfinished}], `archive` (where its
  archive is written, or null).
- `queue.finished` data: `queue`, `counts` {state: requests}, `requests` (the total).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from llmbatch import defaults
from llmbatch.errors import ConfigError, LlmbatchError, StoreError
from llmbatch.tables import positive

if TYPE_CHECKING:
    from llmbatch.store.base import Store
    from llmbatch.store.batching import OpenBatch

PAYLOAD_VERSION = 1
TOLERANCE = 300  # seconds a receiver accepts between a delivery's timestamp and its clock


class WebhookVerificationError(LlmbatchError):
    """A webhook delivery whose signature or timestamp does not check out."""


@dataclass(frozen=True)
class WebhookSettings:
    """`[webhooks]`: where to POST and the variable holding the signing secret."""

    url: str
    secret_env: str
    timeout: float = positive(defaults.WEBHOOK_TIMEOUT_S)
    backoff_seconds: float = positive(defaults.WEBHOOK_BACKOFF_S)
    max_backoff_seconds: float = positive(defaults.WEBHOOK_MAX_BACKOFF_S)
    tick_seconds: float = positive(defaults.WEBHOOK_TICK_S)

    def secret(self) -> str:
        value = os.environ.get(self.secret_env, "")
        if not value:
            raise ConfigError(
                f"[webhooks] secret_env: the environment variable {self.secret_env} is not set"
            )
        return value


def parse_webhooks(table: Any) -> WebhookSettings | None:
    """`[webhooks]` checked: an http(s) URL, a secret variable that is set, numbers above 0."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"[webhooks] must be a table, got a {type(table).__name__}")
    from llmbatch.settings import check_dataclass

    fields = ", ".join(WebhookSettings.__dataclass_fields__)

    def unknown(key: str) -> str:
        return f"[webhooks] has no setting {key!r}; known: {fields}"

    check_dataclass(table, WebhookSettings, "[webhooks] ", unknown, echo=False)
    for key in ("url", "secret_env"):
        if key not in table:
            raise ConfigError(f"[webhooks] needs {key}")
    parts = urlsplit(table["url"])
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"[webhooks] url must be an http:// or https:// URL, got {_safe(table['url'])!r}"
        )
    settings = WebhookSettings(**table)
    settings.secret()
    return settings


def _safe(url: str) -> str:
    """A URL without what may be a token (user info, query): for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else url[:20]


# -- signing ---------------------------------------------------------------------------------
def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except ValueError:
            pass
    return secret.encode()


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header of a delivery."""
    mac = hmac.new(_key(secret), f"{event_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def headers(secret: str, event_id: str, body: bytes, now: float) -> dict[str, str]:
    ts = int(now)
    return {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, event_id, ts, body),
        "user-agent": "llmbatch-webhooks/1",
    }


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: float = TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """The payload of a delivery whose signature checks out, else WebhookVerificationError.

    `headers` as received (any case); the body as received, before any JSON parsing. A
    delivery more than `tolerance` seconds from now is refused (a replay). Dedupe on
    `payload["id"]` (the `webhook-id` header): an event may arrive more than once."""
    h = {k.lower(): v for k, v in headers.items()}
    event_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (event_id and ts and sigs):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        stamp = int(ts)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a number") from None
    if abs((time.time() if now is None else now) - stamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is too far from now (a replay?)")
    expected = sign(secret, event_id, stamp, body)
    if not any(hmac.compare_digest(expected, s) for s in sigs.split()):
        raise WebhookVerificationError("no webhook-signature matches")
    payload: dict[str, Any] = orjson.loads(body)
    if payload.get("id") != event_id:
        raise WebhookVerificationError("the payload's id is not the webhook-id")
    return payload


# -- events ----------------------------------------------------------------------------------
def _envelope(store: Store, kind: str, event_id: str, now: float, data: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "type": kind,
            "version": PAYLOAD_VERSION,
            "id": event_id,
            "created_at": datetime.fromtimestamp(now, UTC).isoformat(),
            "store_id": store.store_id,
            "data": data,
        }
    )


def add_events(store: Store, b: OpenBatch, now: float, archive: str | None) -> None:
    """Put a batch's `batch.ingested` event, and `queue.finished` for each queue of it that
    has nothing left to do, in the outbox (before the batch is marked ingested)."""
    sid = store.store_id
    queues = store.batch_queues(b.attempts_of)
    event_id = f"evt_{sid}_batch_{b.id}"
    data: dict[str, Any] = {
        "batch": {
            "id": b.id,
            "provider": b.provider,
            "provider_batch_id": b.provider_batch_id,
            "endpoint": b.endpoint,
            "model": b.model,
            "state": b.state,
            "request_count": b.request_count,
            "completed": b.completed_count,
            "failed": b.failed_count,
        },
        "queues": [{"queue": q.queue, "unfinished": q.unfinished} for q in queues],
        "archive": archive,
    }
    store.outbox_add(
        event_id,
        "batch.ingested",
        b.id,
        _envelope(store, "batch.ingested", event_id, now, data),
        now,
    )
    for q in queues:
        if q.unfinished:
            continue
        # The same queue finishing again after more requests came is a new event.
        tag = hashlib.blake2b(q.queue.encode(), digest_size=6).hexdigest()
        event_id = f"evt_{sid}_queue_{tag}_{q.high}"
        counts = store.queue_summary(q.queue)
        finished = {"queue": q.queue, "counts": counts, "requests": sum(counts.values())}
        payload = _envelope(store, "queue.finished", event_id, now, finished)
        store.outbox_add(event_id, "queue.finished", b.id, payload, now)


# -- delivery --------------------------------------------------------------------------------
Send = Callable[[str, bytes, dict[str, str], float], int]


def post(url: str, body: bytes, hdrs: dict[str, str], timeout: float) -> int:
    """POST and return the status (an error status too); OSError when nothing came back."""
    req = urllib.request.Request(url, data=body, headers=hdrs, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


class Deliverer:
    """The engine's webhook step: sends the events due, within a time budget."""

    def __init__(
        self,
        store: Store,
        settings: WebhookSettings,
        *,
        clock: Callable[[], float] = time.time,
        send: Send = post,
    ) -> None:
        self.store, self.settings, self.clock, self.send = store, settings, clock, send
        self._spent = 0.0

    def start_tick(self) -> None:
        """A new tick: `tick_seconds` of delivery again."""
        self._spent = 0.0

    def run(self, now: float, notes: list[str]) -> int:
        """Deliver what is due, within what is left of this tick's `tick_seconds` (the engine
        calls it after each batch it ingests, so a receiver hears at once); returns how many
        were delivered."""
        if self._spent >= self.settings.tick_seconds:
            return 0
        started, delivered = self.clock(), 0
        try:
            delivered = self._deliver(now, notes, started)
        finally:
            self._spent += self.clock() - started
        return delivered

    def _deliver(self, now: float, notes: list[str], started: float) -> int:
        delivered = 0
        secret = self.settings.secret()
        for e in self.store.outbox_due(now):
            if self._spent + self.clock() - started > self.settings.tick_seconds:
                break
            at = self.clock()
            try:
                status = self.send(
                    self.settings.url,
                    e.payload,
                    headers(secret, e.event_id, e.payload, at),
                    self.settings.timeout,
                )
                error = None if 200 <= status < 300 else f"answered {status}"
            except StoreError:
                raise
            except Exception as exc:
                error = f"no answer ({type(exc).__name__}: {exc})".replace(secret, "***")
            if error is None:
                self.store.outbox_delivered(e.id, self.clock())
                delivered += 1
                continue
            delay = min(
                self.settings.backoff_seconds * 2**e.tries, self.settings.max_backoff_seconds
            )
            said = f"webhook {e.event_id} to {_safe(self.settings.url)}: {error}"
            self.store.outbox_failed(e.id, now + delay, said)
            notes.append(f"{said}; trying again in {delay:.0f} s")
        return delivered
