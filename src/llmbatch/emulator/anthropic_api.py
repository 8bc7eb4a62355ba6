"""The Anthropic door: Message Batches, real-time Messages and Models under `/v1`.

Point the official SDK at the emulator's root:
`anthropic.Anthropic(base_url=emu.url, api_key="anything")`. Calls need `x-api-key`
(any non-empty key; missing → 401 `authentication_error`) and `anthropic-version` (the SDK
sends it). Errors use Anthropic's envelope
`{"type": "error", "error": {"type", "message"}, "request_id"}`.

`GET /v1/models` and `GET /v1/models/{id}` are shared with the OpenAI door: a call carrying
`anthropic-version` gets the Anthropic shape and the `anthropic_models` of the config, any
other the OpenAI one. The list shows each model once, under its dated id when it has one
(aliases are not listed); retrieving an alias answers its dated model, as the service does.

Choices where the service documents nothing (docs/emulator.md repeats them): cancelling
an ended batch is a 400 and cancelling a `canceling` one returns it unchanged; deleting an
unfinished batch is a 400; an unknown batch id is a 404 `not_found_error`; after
`archived_at` the batch is still retrievable but its results answer 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llmbatch.emulator import message_batches as mb
from llmbatch.emulator.anthropic_synth import (
    CacheUse,
    MessagesError,
    Prompt,
    cache_use,
    check_params,
    check_window,
    count_prompt,
    message,
)
from llmbatch.emulator.calls import Surface, operation
from llmbatch.emulator.envelope import AnthropicApiError, file_response, json_response
from llmbatch.emulator.models import ModelCard
from llmbatch.emulator.surfaces import ANTHROPIC

if TYPE_CHECKING:
    from llmbatch.emulator.core import Emulator

Json = dict[str, Any]
Endpoint = Callable[[Request], Awaitable[Response]]


def _root(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _body(request: Request, limit: int) -> tuple[Any, bytes]:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise AnthropicApiError(
            413, "Request exceeds the maximum allowed number of bytes.", "request_too_large"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise AnthropicApiError(
                413, "Request exceeds the maximum allowed number of bytes.", "request_too_large"
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        return orjson.loads(raw), raw
    except orjson.JSONDecodeError:
        raise mb.invalid("The request body is not valid JSON.") from None


# --- message batches -------------------------------------------------------------------------


async def batches_create(request: Request, emu: Emulator, surface: Surface) -> Response:
    body, raw = await _body(request, emu.cfg.anthropic_max_batch_bytes)
    requests = mb.check_requests(body, emu.cfg.anthropic_max_requests)
    batch = await run_in_threadpool(mb.create, emu, requests, uses_cache=b"cache_control" in raw)
    return json_response(mb.view(batch.obj, emu.now(), _root(request)))


async def batches_retrieve(request: Request, emu: Emulator, surface: Surface) -> Response:
    batch = mb.get(emu, request.path_params["batch_id"])
    return json_response(mb.view(batch.obj, emu.now(), _root(request)))


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise mb.invalid("limit: Input should be an integer between 1 and 1000")
    return int(raw)


async def batches_list(request: Request, emu: Emulator, surface: Surface) -> Response:
    q = request.query_params
    after, before = q.get("after_id"), q.get("before_id")
    if after and before:
        raise mb.invalid("Give at most one of after_id and before_id.")
    now = emu.now()
    lag = emu.faults.list_lag("messages.batches.list", mb.FLAVOR)
    data, more = emu.state.list_batches(
        mb.FLAVOR,
        limit=_limit(request),
        after=after,
        before=before,
        hide_after=now - lag if lag else None,
    )
    data = [mb.view(obj, now, _root(request)) for obj in data]
    page = {
        "data": data,
        "has_more": more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
    return json_response(page)


async def batches_cancel(request: Request, emu: Emulator, surface: Surface) -> Response:
    batch = mb.cancel(emu, request.path_params["batch_id"])
    return json_response(mb.view(batch.obj, emu.now(), _root(request)))


async def batches_delete(request: Request, emu: Emulator, surface: Surface) -> Response:
    return json_response(mb.delete(emu, request.path_params["batch_id"]))


async def batches_results(request: Request, emu: Emulator, surface: Surface) -> Response:
    batch_id = request.path_params["batch_id"]
    batch = mb.get(emu, batch_id)
    if batch.status != "ended":
        raise mb.invalid(f"Message batch '{batch_id}' has not finished processing yet.")
    path = emu.state.work_path(batch_id, "results")
    if mb.archived(batch.obj, emu.now()):
        path.unlink(missing_ok=True)
        raise AnthropicApiError(
            404,
            f"The results of message batch '{batch_id}' have been archived and are no longer "
            "available.",
            "not_found_error",
            retryable=False,
        )
    if not path.exists():
        raise mb.not_found(batch_id)
    return file_response(path, "application/binary")


# --- real-time messages ----------------------------------------------------------------------


class _PromptCache:
    """Prefixes the real-time door has cached, with their virtual expiry (not persisted)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def use(self, params: Json, now: float) -> CacheUse:
        prompt = count_prompt(params)
        use = cache_use(prompt, lambda bp: self._until.get(bp.prefix, 0.0) > now)
        for bp in prompt.breakpoints:
            self._until[bp.prefix] = now + (3600 if bp.ttl == "1h" else 300)
        return use


def _checked(params: Any, emu: Emulator) -> tuple[Json, Prompt, int]:
    """Checked params, their prompt and the model's largest output (or the error the API
    answers)."""
    try:
        card = check_params(params, emu.cfg.catalog("anthropic"))
        prompt = count_prompt(params)
        check_window(prompt, card)
    except MessagesError as e:
        raise AnthropicApiError(e.status, e.message, e.type, retryable=False) from None
    assert isinstance(params, dict)
    return params, prompt, card.max_output_tokens


def messages_create(cache: _PromptCache) -> Any:
    async def handler(request: Request, emu: Emulator, surface: Surface) -> Response:
        body, _ = await _body(request, 32 * 1024 * 1024)
        params, prompt, ceiling = _checked(body, emu)
        use = cache.use(params, emu.now())
        out = message(
            params,
            salt=emu.new_id("", 8),
            cache=use,
            prompt=prompt,
            service_tier="standard",
            length_rate=emu.cfg.length_rate,
            ceiling=ceiling,
        )
        return json_response(out)

    return handler


async def count_tokens(request: Request, emu: Emulator, surface: Surface) -> Response:
    params, _ = await _body(request, 32 * 1024 * 1024)
    if isinstance(params, dict) and "max_tokens" not in params:
        params = params | {"max_tokens": 1}  # count_tokens takes no max_tokens
    return json_response({"input_tokens": _checked(params, emu)[1].tokens})


# --- models ----------------------------------------------------------------------------------


def display_name(model_id: str) -> str:
    """`claude-sonnet-4-5-20250929` -> `Claude Sonnet 4.5`, as the service names models."""
    parts = [p for p in model_id.split("-") if p not in ("claude", "latest")]
    if parts and len(parts[-1]) == 8 and parts[-1].isdigit():
        parts.pop()
    names = [p.title() for p in parts if not p.isdigit()]
    version = ".".join(p for p in parts if p.isdigit())
    if version.endswith(".0"):
        version = version[:-2]
    return " ".join(["Claude", *names] + ([version] if version else []))


def _model(card: ModelCard) -> Json:
    return {
        "type": "model",
        "id": card.id,
        "display_name": display_name(card.id),
        "created_at": mb.rfc3339(card.created),
        "max_input_tokens": card.context_window,
        "max_tokens": card.max_output_tokens,
        "lifecycle": "active",
        "deprecated_at": None,
        "retires_at": None,
    }


async def models_list(request: Request, emu: Emulator, surface: Surface) -> Response:
    cards = emu.cfg.catalog("anthropic").canonical()
    names = [c.id for c in cards]
    q = request.query_params
    limit = _limit(request)
    after, before = q.get("after_id"), q.get("before_id")
    start, stop = 0, len(names)
    if after in names:
        start = names.index(after) + 1
    if before in names:
        stop = names.index(before)
        start = max(0, stop - limit)
    page = cards[start:stop][:limit]
    more = (start > 0) if before in names else start + len(page) < stop
    return json_response(
        {
            "data": [_model(c) for c in page],
            "has_more": more,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }
    )


async def models_retrieve(request: Request, emu: Emulator, surface: Surface) -> Response:
    name = request.path_params["model"]
    catalog = emu.cfg.catalog("anthropic")
    card = catalog.get(name)
    if card is None:
        raise AnthropicApiError(404, f"model: {name}", "not_found_error", retryable=False)
    return json_response(_model(catalog.get(card.snapshot or "") or card))


def _by_header(anthropic: Endpoint, other: Endpoint) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        if "anthropic-version" in request.headers:
            return await anthropic(request)
        return await other(request)

    return endpoint


def routes(emu: Emulator, openai_v1: list[Route]) -> list[Route]:
    """The Anthropic routes; `/v1/models*` fall back to the matching `openai_v1` route for
    calls without `anthropic-version`."""
    surface = Surface(ANTHROPIC)
    fallback = {(r.path, m): r.endpoint for r in openai_v1 for m in (r.methods or ())}

    def r(path: str, name: str, handler: Any, method: str) -> Route:
        endpoint = operation(emu, name, surface, handler)
        if (path, method) in fallback:
            endpoint = _by_header(endpoint, fallback[(path, method)])
        return Route(path, endpoint, methods=[method])

    b = "/v1/messages/batches"
    return [
        r("/v1/messages", "messages.create", messages_create(_PromptCache()), "POST"),
        r("/v1/messages/count_tokens", "messages.count_tokens", count_tokens, "POST"),
        r(b, "messages.batches.create", batches_create, "POST"),
        r(b, "messages.batches.list", batches_list, "GET"),
        r(b + "/{batch_id}", "messages.batches.retrieve", batches_retrieve, "GET"),
        r(b + "/{batch_id}", "messages.batches.delete", batches_delete, "DELETE"),
        r(b + "/{batch_id}/cancel", "messages.batches.cancel", batches_cancel, "POST"),
        r(b + "/{batch_id}/results", "messages.batches.results", batches_results, "GET"),
        r("/v1/models", "models.list", models_list, "GET"),
        r("/v1/models/{model}", "models.retrieve", models_retrieve, "GET"),
    ]
