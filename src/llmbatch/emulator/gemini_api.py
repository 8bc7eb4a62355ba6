"""The Gemini door: the Developer API's Files and Batch routes, under `v1` (the SDK's
default) and `v1beta` (`GOOGLE_GENAI_API_VERSION=beta`, and the REST docs).

Point the official SDK at the emulator's root::

    genai.Client(api_key="anything", http_options={"base_url": emu.url})
    # or GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:8000 with GEMINI_API_KEY / GOOGLE_API_KEY

Calls need a key in `x-goog-api-key` (or `?key=`; any non-empty key; missing: 403
PERMISSION_DENIED), except the upload URL's data calls, which carry none. Errors use
Google's envelope `{"error": {"code", "message", "status"}}`.

Routes (`{v}` is `v1` or `v1beta`)::

    POST   /upload/{v}/files                          resumable upload: start, then data
    GET    /{v}/files  ·  GET|DELETE /{v}/files/ID    list (pageSize, pageToken), get, delete
    GET    /{v}/files/ID:download?alt=media           the bytes (also under /download/{v}/…)
    POST   /{v}/models/M:batchGenerateContent         create (inline requests or a file)
    POST   /{v}/models/M:asyncBatchEmbedContent       create an embeddings batch
    GET    /{v}/batches  ·  GET|DELETE /{v}/batches/ID   list, get, delete
    POST   /{v}/batches/ID:cancel

`/v1/files…` and `/v1/batches…` are also the OpenAI door's paths: a call is Gemini's when
it carries `x-goog-api-key`, `x-goog-api-client` (the SDK always sends it) or `?key=`,
and the OpenAI door's otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from llmbatch.emulator import gemini_batches as gb
from llmbatch.emulator import gemini_files as gf
from llmbatch.emulator.calls import DroppingResponse, Handler, Surface, operation
from llmbatch.emulator.envelope import GoogleApiError, file_response, json_response
from llmbatch.emulator.surfaces import GEMINI

if TYPE_CHECKING:
    from llmbatch.emulator.core import Emulator

Json = dict[str, Any]
Endpoint = Callable[[Request], Awaitable[Response]]
VERSIONS = ("v1", "v1beta")
#: Upload data calls are acknowledged in blocks of this many bytes (the service's granularity).
GRANULARITY = 256 * 1024


def is_gemini(request: Request) -> bool:
    """Whether a call comes from a Gemini client (its key header, the SDK's telemetry
    header, or a `key` query parameter), for the paths the OpenAI door shares."""
    headers = request.headers
    return (
        "x-goog-api-key" in headers
        or "x-goog-api-client" in headers
        or "key" in request.query_params
    )


def _root(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _version(request: Request) -> str:
    return next((s for s in request.url.path.split("/") if s in VERSIONS), "v1beta")


async def _json_body(request: Request, limit: int) -> Any:
    raw = await request.body()
    if len(raw) > limit:
        raise GoogleApiError(400, f"Request payload size exceeds the limit: {limit} bytes.")
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GoogleApiError(400, "Invalid JSON payload received.") from None


# --- files -----------------------------------------------------------------------------------


async def upload_start(request: Request, emu: Emulator, surface: Surface) -> Response:
    body = await _json_body(request, 1 << 20)
    headers = {k.lower(): v for k, v in request.headers.items()}
    upload_id = await run_in_threadpool(gf.start, emu, body, headers)
    url = f"{_root(request)}/upload/{_version(request)}/files?upload_id={upload_id}"
    return Response(
        b"",
        200,
        {
            "x-goog-upload-url": url + "&upload_protocol=resumable",
            "x-goog-upload-status": "active",
            "x-goog-upload-chunk-granularity": str(GRANULARITY),
            "x-goog-upload-control-url": url,
        },
    )


async def upload_data(request: Request, emu: Emulator, surface: Surface) -> Response:
    data = await request.body()
    status, obj, received = await run_in_threadpool(
        gf.chunk,
        emu,
        request.query_params["upload_id"],
        request.headers.get("x-goog-upload-command", ""),
        request.headers.get("x-goog-upload-offset"),
        data,
    )
    headers = {"x-goog-upload-status": status, "x-goog-upload-size-received": str(received)}
    if obj is None:
        return Response(b"", 200, headers)
    body = {"file": gf.view(obj, _root(request), _version(request))}
    return json_response(body, 200, headers)


async def files_list(request: Request, emu: Emulator, surface: Surface) -> Response:
    q = request.query_params
    files, token = gf.list_page(emu, gf.page_size(q.get("pageSize")), q.get("pageToken"))
    out: Json = {}
    if files:
        out["files"] = [gf.view(f, _root(request), _version(request)) for f in files]
    if token:
        out["nextPageToken"] = token
    return json_response(out)


async def files_get(request: Request, emu: Emulator, surface: Surface) -> Response:
    obj = gf.get(emu, request.path_params["file_id"])
    return json_response(gf.view(obj, _root(request), _version(request)))


async def files_delete(request: Request, emu: Emulator, surface: Surface) -> Response:
    gf.delete(emu, request.path_params["file_id"])
    return json_response({})


async def files_download(request: Request, emu: Emulator, surface: Surface) -> Response:
    file_id = request.path_params["file_id"]
    if request.query_params.get("alt") != "media":
        raise GoogleApiError(400, "Downloads take ?alt=media.")
    obj = gf.get(emu, file_id)
    if obj.get("source") != "GENERATED":  # as the SDK's docs say: uploads cannot be fetched
        raise GoogleApiError(
            400,
            f"Only generated files can be downloaded; files/{file_id} was uploaded.",
            "FAILED_PRECONDITION",
        )
    path = gf.content_path(emu, file_id)
    return file_response(path, obj.get("mimeType"))


# --- batches ---------------------------------------------------------------------------------


def _create(kind: str) -> Handler:
    async def handler(request: Request, emu: Emulator, surface: Surface) -> Response:
        body = await _json_body(request, emu.cfg.gemini_max_inline_bytes)
        model = request.path_params["model"]
        batch = await run_in_threadpool(gb.create, emu, kind, model, body, _version(request))
        return json_response(gb.operation(emu, batch.obj))

    return handler


async def batches_get(request: Request, emu: Emulator, surface: Surface) -> Response:
    batch = gb.get(emu, request.path_params["batch_id"])
    return json_response(await run_in_threadpool(gb.operation, emu, batch.obj))


async def batches_list(request: Request, emu: Emulator, surface: Surface) -> Response:
    q = request.query_params
    size, token = gf.page_size(q.get("pageSize")), q.get("pageToken")
    objs, next_token = await run_in_threadpool(gb.list_page, emu, size, token)
    out: Json = {}
    if objs:
        out["operations"] = [gb.operation(emu, obj) for obj in objs]
    if next_token:
        out["nextPageToken"] = next_token
    return json_response(out)


async def batches_cancel(request: Request, emu: Emulator, surface: Surface) -> Response:
    gb.cancel(emu, request.path_params["batch_id"])
    return json_response({})


async def batches_delete(request: Request, emu: Emulator, surface: Surface) -> Response:
    gb.delete(emu, request.path_params["batch_id"])
    return json_response({})


# --- routing ---------------------------------------------------------------------------------


def _with_upload_status(endpoint: Endpoint) -> Endpoint:
    """Every answer on the upload URL carries `x-goog-upload-status` (an error, a fault:
    `final`), or the SDK sleeps and retries it."""

    async def wrapped(request: Request) -> Response:
        response = await endpoint(request)
        if not isinstance(response, DroppingResponse):
            response.headers.setdefault("x-goog-upload-status", "final")
        return response

    return wrapped


def _upload(start: Endpoint, data: Endpoint) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        if "upload_id" in request.query_params:
            return await data(request)
        return await start(request)

    return endpoint


def _by_caller(gemini: Endpoint, others: list[BaseRoute]) -> Endpoint:
    """Serve Gemini's callers; hand anyone else to the first of `others` (the OpenAI door's
    `/v1` routes) that matches the path and method."""

    async def endpoint(request: Request) -> Response:
        if is_gemini(request):
            return await gemini(request)
        for route in others:
            match, child = route.matches(request.scope)
            if match == Match.FULL and isinstance(route, Route):
                request.scope.update(child)
                other: Endpoint = route.endpoint
                return await other(Request(request.scope, request.receive))
        raise HTTPException(404)

    return endpoint


def routes(emu: Emulator, openai_v1: list[Route]) -> list[BaseRoute]:
    """The Gemini routes, for each API version; those under `/v1` pass calls that are not
    Gemini's to `openai_v1`."""
    surface = Surface(GEMINI)
    out: list[BaseRoute] = []
    fallback: list[BaseRoute] = list(openai_v1)

    def r(path: str, name: str, handler: Handler, method: str) -> None:
        endpoint = operation(emu, name, surface, handler)
        if path.startswith("/v1/"):
            endpoint = _by_caller(endpoint, fallback)
        out.append(Route(path, endpoint, methods=[method]))

    for v in VERSIONS:
        start = operation(emu, "files.create", surface, upload_start)
        data = operation(emu, "files.upload", Surface(GEMINI, keyless=True), upload_data)
        upload = _upload(start, _with_upload_status(data))
        out.append(Route(f"/upload/{v}/files", upload, methods=["POST"]))
        r(f"/{v}/files", "files.list", files_list, "GET")
        r(f"/{v}/files/{{file_id}}:download", "files.download", files_download, "GET")
        out.append(
            Route(
                f"/download/{v}/files/{{file_id}}:download",
                operation(emu, "files.download", surface, files_download),
                methods=["GET"],
            )
        )
        r(f"/{v}/files/{{file_id}}", "files.get", files_get, "GET")
        r(f"/{v}/files/{{file_id}}", "files.delete", files_delete, "DELETE")
        model = f"/{v}/models/{{model}}"
        r(model + ":batchGenerateContent", "batches.create", _create("generate"), "POST")
        r(model + ":asyncBatchEmbedContent", "batches.create_embeddings", _create("embed"), "POST")
        r(f"/{v}/batches", "batches.list", batches_list, "GET")
        r(f"/{v}/batches/{{batch_id}}:cancel", "batches.cancel", batches_cancel, "POST")
        r(f"/{v}/batches/{{batch_id}}", "batches.get", batches_get, "GET")
        r(f"/{v}/batches/{{batch_id}}", "batches.delete", batches_delete, "DELETE")
    return out
