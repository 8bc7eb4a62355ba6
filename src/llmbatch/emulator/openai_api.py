"""The Files, Batches, Models and real-time routes, for every flavour and door.

Choices where the service's behaviour is not documented (the docs say what we chose):
an unknown or deleted input file at create is 400 `invalid_request_error` with
`param: "input_file_id"`; unknown ids on retrieve/delete/content/cancel are 404; a
0-byte upload is accepted (the batch then fails validation with `empty_file`); uploads
over `max_upload_bytes` (512 MB) get 413; the 501st Azure file gets 400
`file_limit_exceeded`; lists of files and batches are newest first (`order` for files).
"""

from __future__ import annotations

import hashlib
import secrets
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from llmbatch.emulator.calls import Surface, operation
from llmbatch.emulator.core import FILE_TTL
from llmbatch.emulator.envelope import (
    ApiError,
    bad_request,
    file_response,
    json_response,
    not_found,
)
from llmbatch.emulator.synth import RequestError, respond
from llmbatch.emulator.validation import check_create, check_expires_after

if TYPE_CHECKING:
    from llmbatch.emulator.core import Emulator

Json = dict[str, Any]
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
#: Realtime endpoints of the image batch endpoints are not served; their batch lines are.
REALTIME = {
    "chat.completions": ("/chat/completions", "chat"),
    "responses": ("/responses", "responses"),
    "embeddings": ("/embeddings", "embeddings"),
    "completions": ("/completions", "completions"),
    "moderations": ("/moderations", "moderations"),
}


# --- files -----------------------------------------------------------------------------------


async def _drain(request: Request) -> None:
    try:
        async for _ in request.stream():
            pass
    except ClientDisconnect:
        pass


class _Upload(MultiPartParser):
    """starlette's multipart parser, with the file part written to `target` as it arrives
    (its size and sha256 taken on the way; past `limit` the rest is read and dropped), not
    spooled to a temporary file and copied: starlette writes each piece past the first MB
    through a thread hop, and each hop waits for the GIL behind the worker's validation of
    another batch (a 25 MB upload took 1-2 s instead of 0.3 s)."""

    def __init__(self, request: Request, target: Path, limit: int, stream: Any) -> None:
        super().__init__(request.headers, stream, max_files=1, max_fields=20)
        self.target, self.limit = target, limit
        self.size, self.digest = 0, hashlib.sha256()
        self.out: Any = None

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        upload = self._current_part.file
        if upload is not None:  # the file (max_files=1: the one)
            upload.file.close()  # starlette's spooled file, not written
            self.out = upload.file = self.target.open("wb")
            self._files_to_close_on_error.append(self.out)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is None:
            super().on_part_data(data, start, end)
            return
        piece = memoryview(data)[start:end]
        self.size += len(piece)
        if self.size <= self.limit:
            self.digest.update(piece)
            self.out.write(piece)

    def on_part_end(self) -> None:
        super().on_part_end()
        self._file_parts_to_finish.clear()  # written already: no seek back (a thread hop)


async def _receive(request: Request, target: Path, limit: int) -> tuple[FormData, _Upload]:
    """The form of a multipart upload, its file part already at `target`. Malformed parts
    are a 400 as `request.form()` makes them."""
    async with aclosing(request.stream()) as stream:
        parser = _Upload(request, target, limit, stream)
        try:
            return await parser.parse(), parser
        except MultiPartException as exc:
            raise HTTPException(status_code=400, detail=exc.message) from None


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"File is too large: the maximum upload size is {limit // (1024 * 1024)} MB.",
        code="file_too_large",
        retryable=False,
    )


async def files_create(request: Request, emu: Emulator, surface: Surface) -> Response:
    flavor = surface.flavor
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        await _drain(request)
        raise bad_request("Expected a multipart/form-data body with 'file' and 'purpose'.")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > emu.cfg.max_upload_bytes + 65_536:
        await _drain(request)
        raise _too_large(emu.cfg.max_upload_bytes)
    if flavor.azure and emu.state.count_files(flavor.name, emu.now()) >= emu.cfg.azure_file_limit:
        await _drain(request)
        raise bad_request(
            f"This resource already has {emu.cfg.azure_file_limit} files, the most it may "
            "hold (output files included). Delete files to upload more.",
            code="file_limit_exceeded",
        )
    # Received under a name no file id has, renamed to its id once the form passes: the
    # ids (seeded with `--seed`) are drawn in the same order as ever.
    received = emu.state.files_dir / f".upload-{secrets.token_hex(8)}"
    try:
        form, parser = await _receive(request, received, emu.cfg.max_upload_bytes)
    except (ValueError, KeyError, AssertionError) as e:
        received.unlink(missing_ok=True)
        raise bad_request(f"Malformed multipart/form-data body: {e}") from None
    except BaseException:
        received.unlink(missing_ok=True)
        raise
    try:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise bad_request(
                "Missing required parameter: 'file'.", "file", "missing_required_parameter"
            )
        purposes = (
            (*PURPOSES, flavor.batch_purpose)
            if flavor.service is None
            else ("batch", flavor.batch_purpose)
        )
        if not isinstance(purpose, str) or purpose not in purposes:
            raise bad_request(
                f"Invalid value for 'purpose': {purpose!r}. Supported: {', '.join(dict.fromkeys(purposes))}.",
                "purpose",
                "invalid_value",
            )
        expires_after = None
        if "expires_after[anchor]" in form or "expires_after[seconds]" in form:
            seconds = str(form.get("expires_after[seconds]", ""))
            expires_after = check_expires_after(
                {
                    "anchor": form.get("expires_after[anchor]"),
                    "seconds": int(seconds) if seconds.isdigit() else seconds,
                },
                "expires_after",
            )
        if parser.size > emu.cfg.max_upload_bytes:
            raise _too_large(emu.cfg.max_upload_bytes)
        file_id = emu.new_id("file-", 12)
        await form.close()  # the file written, before it is named
        received.replace(emu.state.file_path(file_id))
        size = parser.size
        request.state.body_sha256 = parser.digest.hexdigest()
    finally:
        await form.close()
        received.unlink(missing_ok=True)
    now = int(emu.now())
    if expires_after is not None:
        expires_at: int | None = now + expires_after["seconds"]
    elif purpose == flavor.batch_purpose and not flavor.azure:
        expires_at = now + FILE_TTL
    else:
        expires_at = None
    obj = emu.file_object(file_id, size, upload.filename or "upload.jsonl", purpose, expires_at)
    emu.state.add_file(flavor.name, obj)
    return json_response(obj)


def _limit(request: Request, default: int, high: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise bad_request(
            f"Invalid 'limit': expected an integer between 1 and {high}.", "limit", "invalid_value"
        )
    return int(raw)


def _page(data: list[Json], has_more: bool) -> Json:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


async def files_list(request: Request, emu: Emulator, surface: Surface) -> Response:
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("Invalid 'order': expected 'asc' or 'desc'.", "order", "invalid_value")
    now = emu.now()
    data, more = emu.state.list_files(
        surface.flavor.name,
        now,
        purpose=request.query_params.get("purpose"),
        limit=_limit(request, 10_000, 10_000),
        after=request.query_params.get("after"),
        descending=order == "desc",
    )
    lag = emu.faults.list_lag("files.list", surface.flavor.name)
    if lag:
        data = [f for f in data if f["created_at"] <= now - lag]
    return json_response(_page(data, more))


def _file(request: Request, emu: Emulator, surface: Surface) -> Json:
    file_id = request.path_params["file_id"]
    obj = emu.state.get_file(surface.flavor.name, file_id, emu.now())
    if obj is None:
        raise not_found(f"No such File object: {file_id}")
    return obj


async def files_retrieve(request: Request, emu: Emulator, surface: Surface) -> Response:
    return json_response(_file(request, emu, surface))


async def files_delete(request: Request, emu: Emulator, surface: Surface) -> Response:
    file_id = request.path_params["file_id"]
    if not emu.state.delete_file(surface.flavor.name, file_id, emu.now()):
        raise not_found(f"No such File object: {file_id}")
    return json_response({"id": file_id, "object": "file", "deleted": True})


async def files_content(request: Request, emu: Emulator, surface: Surface) -> Response:
    obj = _file(request, emu, surface)
    path = emu.state.file_path(obj["id"])
    if not path.exists():
        raise not_found(f"No such File object: {obj['id']}")
    return file_response(path, "application/octet-stream")


# --- batches ---------------------------------------------------------------------------------


async def _json(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise bad_request(
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON "
            "payload."
        ) from None


async def batches_create(request: Request, emu: Emulator, surface: Surface) -> Response:
    params = check_create(await _json(request), surface.flavor)
    file_id = params["input_file_id"]
    obj = emu.state.get_file(surface.flavor.name, file_id, emu.now())
    if obj is None:
        raise bad_request(
            f"Could not find file with ID '{file_id}'.", "input_file_id", "file_not_found"
        )
    purpose = surface.flavor.batch_purpose
    if obj["purpose"] != purpose:
        raise bad_request(
            f"The input file '{file_id}' has purpose '{obj['purpose']}'; a batch needs a file "
            f"uploaded with purpose '{purpose}'.",
            "input_file_id",
            "invalid_file_purpose",
        )
    if not surface.flavor.keeps_metadata:
        params["metadata"] = None
    created = emu.create_batch(surface.flavor, params).obj
    return json_response(surface.flavor.present(created, created=True))


async def batches_retrieve(request: Request, emu: Emulator, surface: Surface) -> Response:
    batch_id = request.path_params["batch_id"]
    batch = emu.state.get_batch(batch_id, surface.flavor.name)
    if batch is None:
        raise not_found(f"No batch found with id '{batch_id}'.")
    return json_response(surface.flavor.present(batch.obj))


async def batches_cancel(request: Request, emu: Emulator, surface: Surface) -> Response:
    batch_id = request.path_params["batch_id"]
    batch, refused = emu.cancel_batch(batch_id, surface.flavor.name)
    if batch is None:
        raise not_found(f"No batch found with id '{batch_id}'.")
    if refused is not None:
        raise ApiError(409, f"Cannot cancel a batch with status '{refused}'.", retryable=False)
    return json_response(surface.flavor.present(batch.obj))


async def batches_list(request: Request, emu: Emulator, surface: Surface) -> Response:
    lag = emu.faults.list_lag("batches.list", surface.flavor.name)
    data, more = emu.state.list_batches(
        surface.flavor.name,
        limit=_limit(request, 20, 100),
        after=request.query_params.get("after"),
        hide_after=emu.now() - lag if lag else None,
    )
    flavor = surface.flavor
    if flavor.service is not None and flavor.service.list_array:
        # a bare array of every batch, as such a service answers (no pages)
        data, _ = emu.state.list_batches(
            flavor.name, limit=1_000_000, after=None, hide_after=emu.now() - lag if lag else None
        )
        return json_response([flavor.present(b) for b in data])
    return json_response(_page([flavor.present(b) for b in data], more))


# --- models and real-time calls --------------------------------------------------------------


def _models(emu: Emulator, surface: Surface) -> dict[str, str]:
    return surface.flavor.models(emu.cfg)


def _model_object(emu: Emulator, surface: Surface, name: str) -> Json:
    card = surface.flavor.card(emu.cfg, name)
    created = card.created if card is not None else 1_700_000_000
    owner = "user" if name.startswith("ft:") else "system"
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


async def models_list(request: Request, emu: Emulator, surface: Surface) -> Response:
    data = [_model_object(emu, surface, name) for name in _models(emu, surface)]
    return json_response({"object": "list", "data": data})


async def models_retrieve(request: Request, emu: Emulator, surface: Surface) -> Response:
    name = request.path_params["model"]
    if name not in _models(emu, surface):
        raise ApiError(
            404, f"The model '{name}' does not exist.", code="model_not_found", retryable=False
        )
    return json_response(_model_object(emu, surface, name))


def _realtime(kind: str) -> Any:
    async def handler(request: Request, emu: Emulator, surface: Surface) -> Response:
        body = await _json(request)
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.")
        model = request.path_params.get("deployment") or body.get("model")
        if kind == "moderations" and model is None:
            model = "omni-moderation-latest"
        if not isinstance(model, str) or model not in _models(emu, surface):
            raise ApiError(
                404,
                f"The model '{model}' does not exist or you do not have access to it.",
                code="model_not_found",
                retryable=False,
            )
        try:
            out, _ = respond(
                kind,
                body,
                model=model,
                created=int(emu.now()),
                salt=emu.new_id("", 8),
                length_rate=emu.cfg.length_rate,
                embedding_dimensions=emu.cfg.embedding_dimensions,
                card=surface.flavor.card(emu.cfg, model),
            )
        except RequestError as e:
            code = e.code if e.code is not None or e.status != 400 else "invalid_value"
            raise ApiError(e.status, e.message, param=e.param, code=code, retryable=False) from None
        return json_response(out)

    return handler


def routes(emu: Emulator, prefix: str, surface: Surface) -> list[Route]:
    """Every API route of one door (`/v1`, `/openai`, or `/openai/v1`)."""

    def r(path: str, name: str, handler: Any, method: str) -> Route:
        return Route(prefix + path, operation(emu, name, surface, handler), methods=[method])

    out = [
        r("/files", "files.create", files_create, "POST"),
        r("/files", "files.list", files_list, "GET"),
        r("/files/{file_id}", "files.retrieve", files_retrieve, "GET"),
        r("/files/{file_id}", "files.delete", files_delete, "DELETE"),
        r("/files/{file_id}/content", "files.content", files_content, "GET"),
        r("/batches", "batches.create", batches_create, "POST"),
        r("/batches", "batches.list", batches_list, "GET"),
        r("/batches/{batch_id}", "batches.retrieve", batches_retrieve, "GET"),
        r("/batches/{batch_id}/cancel", "batches.cancel", batches_cancel, "POST"),
        r("/models", "models.list", models_list, "GET"),
        r("/models/{model}", "models.retrieve", models_retrieve, "GET"),
    ]
    for name, (path, kind) in REALTIME.items():
        out.append(r(path, name, _realtime(kind), "POST"))
        if surface.legacy and kind in ("chat", "embeddings", "completions"):
            out.append(r("/deployments/{deployment}" + path, name, _realtime(kind), "POST"))
    return out
