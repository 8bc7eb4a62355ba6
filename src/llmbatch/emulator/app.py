"""The ASGI app: the OpenAI door (`/v1`), Azure's legacy (`/openai`) and v1
(`/openai/v1`) doors, one OpenAI door per compatible service (`/compatible/NAME/v1`, with
the service's differences), the Anthropic Message Batches door (`/v1/messages/batches`), the
Gemini door (`/v1beta`, `/upload`, and Gemini's callers on `/v1`), and the control API
(`/_emulator`). A door is one more route list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from llmbatch.emulator import anthropic_api, gemini_api, openai_api
from llmbatch.emulator.calls import Surface, quiet_drop_logs
from llmbatch.emulator.config import make_config
from llmbatch.emulator.control import Control
from llmbatch.emulator.core import Emulator
from llmbatch.emulator.envelope import (
    AnthropicApiError,
    ApiError,
    GoogleApiError,
    anthropic_error_type,
)
from llmbatch.emulator.surfaces import AZURE, OPENAI, flavor_of
from llmbatch.emulator.worker import Worker


def create_app(
    data_dir: str | Path | None = None, time_scale: float = 1.0, **config: Any
) -> Starlette:
    """Build an emulator app; `config` takes the fields of `EmulatorConfig`.

    The worker thread starts with the app's lifespan (or on the first request when the app
    is mounted without one) and stops at shutdown. `app.state.emulator` is the Emulator."""
    emu = Emulator(data_dir, time_scale, make_config(config), Worker)
    routes: list[BaseRoute] = []
    routes += Control(emu).routes()
    openai_v1 = openai_api.routes(emu, "/v1", Surface(OPENAI))
    routes += anthropic_api.routes(emu, openai_v1)
    routes += gemini_api.routes(emu, openai_v1)
    routes += openai_v1
    routes += openai_api.routes(emu, "/openai/v1", Surface(AZURE))
    routes += openai_api.routes(emu, "/openai", Surface(AZURE, legacy=True))
    for name in emu.cfg.services:  # each OpenAI-compatible service, with its differences
        routes += openai_api.routes(
            emu, f"/compatible/{name}/v1", Surface(flavor_of(name, emu.cfg))
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        quiet_drop_logs()
        emu.start()
        try:
            yield
        finally:
            emu.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif status == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        else:
            message = "The server had an error while processing your request."
        path = request.url.path
        if path.startswith(("/v1beta/", "/upload/", "/download/")) or gemini_api.is_gemini(request):
            return GoogleApiError(status, message).response()
        if request.url.path.startswith("/v1/messages") or "anthropic-version" in request.headers:
            return AnthropicApiError(
                status, message, anthropic_error_type(status), retryable=status >= 500
            ).response()
        return ApiError(status, message, retryable=status >= 500).response()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, 500: http_error},
    )
    app.state.emulator = emu
    return app
