"""Results as users read them: the results envelope (JSONL in OpenAI's batch output shape)
or a flat CSV. `export` is the one library function behind `llmbatch results`, the Python
API, archives and webhooks.

One line per finished request — succeeded, failed or cancelled — whatever the provider:

    {"id", "custom_id", "provider", "response": {"status_code", "request_id", "body"} | null,
     "error": {"code", "message"} | null}

- `id` is `batch_req_` and 32 hex digits, as OpenAI's are: a hash of the store id and the
  attempt, so the same result has the same id in every export (and another store's never).
- `response.body` is the provider's own body, spliced in as stored: an OpenAI/Azure
  completion or error body, an Anthropic `message` or, for an `errored` Anthropic result, its
  whole error envelope `{"type": "error", "error": {"type", "message"}, "request_id"}`.
- `response` is null only when no provider answered (expired, cancelled, never run).
- `error` is null on success; on failure `code` is the provider's error code or type
  (`overloaded_error`, `batch_expired`, ...) and `message` says why, with our retry verdict;
  a cancelled request's code is its cancel reason (`cancelled`, `batch_cancelled`).
- A result recorded without an HTTP status (Anthropic's batch results carry none) gets the one
  its provider's format gives its error code (`Format.status_code`), a succeeded one 200.

Order: `recorded` (the order results were recorded in) or `input` (the order requests were
enqueued in). Either way an export reads what was recorded up to the moment it started, and
its `cursor` (the newest result id then) resumes it: `after=cursor` gives exactly what was
recorded since. A request sent again (`llmbatch retry`) appears once, with its newest result.

CSV has one row per request, `output_text` extracted per provider and endpoint (`output_text`).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Any, Final

import orjson

from llmbatch.providers import format_or_base
from llmbatch.results import openai_output_text as openai_output_text
from llmbatch.sdk import outcome, status_code
from llmbatch.store.base import Store
from llmbatch.store.types import ResultRow

CSV_COLUMNS = (
    "custom_id",
    "state",
    "status_code",
    "output_text",
    "input_tokens",
    "output_tokens",
    "error_code",
    "error_message",
    "id",
    "provider",
)
ORDERS = ("recorded", "input")
STATES = ("succeeded", "failed", "cancelled")


@dataclass
class Export:
    """An export under way: `rows` to write, and `cursor`, what to pass as `after` next time.

    `store_id` makes the envelope ids; `count` grows as rows are read."""

    rows: Iterator[ResultRow]
    cursor: int
    store_id: str
    count: int = 0

    def __iter__(self) -> Iterator[ResultRow]:
        for r in self.rows:
            self.count += 1
            yield r

    def lines(self) -> Iterator[bytes]:
        """The envelope lines (each ends with a newline)."""
        for r in self:
            yield jsonl_line(r, self.store_id)

    def dicts(self) -> Iterator[dict[str, Any]]:
        """The envelopes as dicts (for the Python API and webhooks)."""
        for line in self.lines():
            yield orjson.loads(line)

    def results(self) -> Iterator[Result]:
        """The rows as `Result` objects (the Python API)."""
        for r in self:
            yield Result.of(r, self.store_id)


@dataclass(frozen=True, slots=True)
class Result:
    """One finished request as the Python API gives it: what it asked of which model, the
    provider's body parsed, its tokens and batch cost, and `response()`, the SDK's own typed
    object (or the SDK's status error, raised). `envelope()` is its `llmbatch results` line.

    `id` and `body` are worked out from `row` when first read (`_lazy`): a program that
    holds 20,000 results and reads their state, or their `response()`, holds no parsed
    bodies (~1.8 KB each) and makes no id it does not ask for."""

    id: str  # batch_req_..., the same in every export
    custom_id: str
    state: str  # succeeded | failed | cancelled
    provider: str
    model: str
    endpoint: str
    status_code: int | None  # the HTTP status of the provider's answer; None if none came
    body: Any  # the provider's body, parsed; None when no provider answered
    error: dict[str, str] | None  # {"code", "message"}; None on success
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    recorded_at: float
    cursor: int  # pass as `after` to read what was recorded since
    row: ResultRow = field(repr=False, compare=False)
    store_id: str = field(repr=False, compare=False, default="")

    @classmethod
    def of(cls, r: ResultRow, store_id: str) -> Result:
        error = None
        if not succeeded(r):
            code = r.error_code or ("cancelled" if r.state == "cancelled" else "failed")
            error = {"code": code, "message": r.error_message or ""}
        return cls(
            id=UNREAD,  # type: ignore[arg-type]
            custom_id=r.custom_id,
            state=r.state,
            provider=r.provider,
            model=r.model,
            endpoint=r.endpoint,
            status_code=status_code(r) if r.body is not None else None,
            body=UNREAD,
            error=error,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            cached_tokens=r.cached_tokens,
            recorded_at=r.recorded_at,
            cursor=r.cursor,
            row=r,
            store_id=store_id,
        )

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def cost_usd(self) -> Decimal | None:
        """What this result cost at the batch price of the day it was recorded, to 1e-6 USD
        (0 when nothing was billed; None when the model has no price)."""
        from llmbatch.pricing import Tokens, free, model_prices

        r = self.row
        if self.state == "cancelled" or not (r.input_tokens or r.output_tokens):
            return Decimal(0)
        if free(r.endpoint, r.model):
            return Decimal(0)
        day = datetime.fromtimestamp(r.recorded_at, UTC)
        prices = model_prices(r.provider, r.model, day)
        tokens = Tokens(
            input=r.input_tokens or 0,
            cached=r.cached_tokens or 0,
            write_5m=r.cache_write_5m_tokens or 0,
            write_1h=r.cache_write_1h_tokens or 0,
            output=r.output_tokens or 0,
        )
        return prices.cost(tokens, prices.tier(tokens.input), batch=True)

    def response(self) -> Any:
        """The SDK's own object for this result (`ChatCompletion`, `Message`, ...); a failed
        one raises as an awaited client call would (the SDK's status error, or llmbatch's)."""
        got = outcome(self.row, "")
        if isinstance(got, BaseException):
            raise got
        return got

    def envelope(self) -> dict[str, Any]:
        """This result as a line of `llmbatch results` (the results envelope)."""
        return dict(orjson.loads(jsonl_line(self.row, self.store_id)))


UNREAD: Final = object()  # a `Result` field not worked out yet


def _parsed_body(r: Result) -> Any:
    body = r.row.body
    if body is None:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


def _lazy(cls: type, name: str, work_out: Callable[[Any], Any]) -> None:
    """Field `name` of the frozen, slotted dataclass `cls` worked out by `work_out(self)` when
    first read and kept in its slot; a value given to the constructor is kept as given.
    Everything a dataclass does with its fields (repr, ==, hash, pickle, `replace`,
    `asdict`) reads the field, so none of it changes."""
    slot = cls.__dict__[name]  # the slot's own descriptor, behind the property

    def read(self: Any) -> Any:
        value = slot.__get__(self, cls)
        if value is UNREAD:
            value = work_out(self)
            slot.__set__(self, value)
        return value

    setattr(cls, name, property(read, slot.__set__))


_lazy(Result, "body", _parsed_body)
_lazy(Result, "id", lambda r: result_id(r.store_id, r.row.attempt_id))


def export(
    store: Store,
    *,
    queue: str | None = None,
    state: str | None = None,
    after: int = 0,
    order: str = "recorded",
) -> Export:
    """Every finished request's newest result recorded after `after`, up to now, streamed."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    high = store.results_high()
    rows = store.iter_results(queue=queue, state=state, after=after, order=order, upto=high)
    return Export(rows, max(after, high), store.store_id)


def result_id(store_id: str, attempt_id: int) -> str:
    """OpenAI-style `batch_req_<32 hex>`, the same for one result in every export."""
    digest = hashlib.blake2b(f"{store_id}:{attempt_id}".encode(), digest_size=16).hexdigest()
    return "batch_req_" + digest


def write(ex: Export, out: IO[Any], fmt: str = "jsonl") -> None:
    """Write an export to a text or binary stream as JSONL or CSV."""
    raw = out if "b" in getattr(out, "mode", "") else getattr(out, "buffer", None)
    if fmt == "csv":
        for chunk in csv_rows(ex, ex.store_id):
            if raw is not None:
                raw.write(chunk.encode())
            else:
                out.write(chunk)
    else:
        for line in ex.lines():
            if raw is not None:
                raw.write(line)
            else:
                out.write(line.decode())
    out.flush()


def succeeded(r: ResultRow) -> bool:
    """Whether this result is a success with a body."""
    return r.state != "cancelled" and r.error_code is None and r.body is not None


def jsonl_line(r: ResultRow, store_id: str) -> bytes:
    """One result in the OpenAI batch output shape, body spliced in without re-encoding."""
    rid = result_id(store_id, r.attempt_id)
    return jsonl_head(rid, r.custom_id, orjson.dumps(r.provider)) + jsonl_tail(
        r.state,
        r.provider,
        r.status_code,
        r.provider_request_id,
        r.body,
        r.error_code,
        r.error_message,
    )


def jsonl_head(rid: str, custom_id: str, provider_json: bytes) -> bytes:
    """The start of `jsonl_line`: its id, custom_id and provider (`provider_json` encoded)."""
    return b'{"id":"%b","custom_id":%b,"provider":%b' % (
        rid.encode(),
        orjson.dumps(custom_id),
        provider_json,
    )


def jsonl_tail(
    state: str,
    provider: str,
    status: int | None,
    request_id: str | None,
    body: bytes | None,
    error_code: str | None,
    error_message: str | None,
) -> bytes:
    """The rest of `jsonl_line` after `jsonl_head`, from a result's fields (no `ResultRow`
    built: the envelope written during ingest has an outcome): response, error, newline."""
    if body is not None:
        if status is None:  # as `status_code` says
            status = format_or_base(provider).status_code(error_code)
        response = b'{"status_code":%b,"request_id":%b,"body":%b}' % (
            orjson.dumps(status),
            orjson.dumps(request_id),
            body,
        )
    else:
        response = b"null"
    if state != "cancelled" and error_code is None and body is not None:  # `succeeded`
        error = b"null"
    else:
        code = error_code or ("cancelled" if state == "cancelled" else "failed")
        error = orjson.dumps({"code": code, "message": error_message or ""})
    return b',"response":%b,"error":%b}\n' % (response, error)


def output_text(provider: str, body: dict[str, Any]) -> str:
    """The generated text of a response body, as its provider's format reads it ("" if none)."""
    return format_or_base(provider).output_text(body)


def csv_rows(results: Iterable[ResultRow], store_id: str) -> Iterator[str]:
    """The CSV header, then one line per result."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    yield _drain(buf)
    for r in results:
        text = ""
        if succeeded(r):
            assert r.body is not None
            try:
                text = output_text(r.provider, orjson.loads(r.body))
            except (orjson.JSONDecodeError, AttributeError, TypeError, IndexError):
                text = ""
        code = status_code(r) if r.body is not None else None
        writer.writerow(
            (
                r.custom_id,
                r.state,
                _blank(code),
                text,
                _blank(r.input_tokens),
                _blank(r.output_tokens),
                r.error_code or "",
                r.error_message or "",
                result_id(store_id, r.attempt_id),
                r.provider,
            )
        )
        yield _drain(buf)


def _blank(v: int | None) -> str:
    return "" if v is None else str(v)


def _drain(buf: io.StringIO) -> str:
    out = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return out
