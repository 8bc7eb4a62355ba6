"""A faithful local emulator of the OpenAI and Azure OpenAI Files and Batch APIs, of
Anthropic Message Batches and of Gemini batch mode (Files API and batches).

Point the unmodified `openai` SDK at it::

    from llmbatch.emulator import running
    with running() as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="anything")
        azure = openai.AzureOpenAI(azure_endpoint=emu.url, api_key="x", api_version="2024-10-21")
        claude = anthropic.Anthropic(base_url=emu.url, api_key="anything")
        gemini = genai.Client(api_key="anything", http_options={"base_url": emu.url})

or serve it: `llmbatch emulator --port 8000` / `python -m llmbatch.emulator --port 8000`.

Routes: OpenAI under `/v1` (files, batches, models, and the real-time chat/completions,
responses, embeddings, completions and moderations endpoints); Azure legacy under
`/openai` (needs `?api-version=`; deployments as models, `/openai/deployments/{d}/...`)
and Azure v1 under `/openai/v1`. Any non-empty key works (`Authorization: Bearer`, or
`api-key` for Azure); no key → 401. Keys are never logged. Anthropic under `/v1/messages`
(Message Batches, real-time Messages, count_tokens) and `/v1/models` with an
`anthropic-version` header; key in `x-api-key` (or Bearer). Gemini under `/v1` and
`/v1beta` (`/upload/{v}/files`, `files`, `models/M:batchGenerateContent`,
`models/M:asyncBatchEmbedContent`, `batches`); key in `x-goog-api-key` (or `?key=`).

Control API (no key), see `control.py` and docs/emulator.md::

    GET  /_emulator/health          POST /_emulator/clock/advance {"seconds"}
    GET|POST|DELETE /_emulator/faults     (5xx/429/401/latency/drop/list_lag, before|after)
    GET|PATCH /_emulator/config     GET|PUT /_emulator/quotas
    POST /_emulator/next-batches    (hold in validating/finalizing, fail validation)
    GET  /_emulator/batches/{id}    POST /_emulator/batches/{id}/{hold|release|expire|cancel|fail}
    POST /_emulator/seed            GET|DELETE /_emulator/calls     POST /_emulator/reset

Modules: `app` (the ASGI app), `openai_api` (files/batches/models/real-time routes),
`calls` (keys, faults, call log around each call), `validation` (at create and in
`validating`), `synth` (deterministic responses and the emulator's own token rule),
`worker` (processing thread), `capacity` (per-model capacity shared by batches), `clock`
(virtual time), `faults`, `state` (SQLite + files under the data dir), `control` (the
control API), `client` (its client), `server` (`serve`, `running`), `config` (settings and
defaults), `surfaces` (OpenAI vs Azure), `models` (the model catalog and the models file),
`replies` (the length rule), `chat_synth` (chat and Responses replies), `structured` (what
a request's format and tools ask for), `schema` (the providers' schema rules), `instances`
and `patterns` (values valid against a schema);
Anthropic: `anthropic_api` (routes), `message_batches` (the batch objects),
`anthropic_worker` (their processing), `anthropic_synth` (params checks, messages, usage);
Gemini: `gemini_api` (routes), `gemini_files` (Files API, resumable uploads),
`gemini_batches` (the batch Operations), `gemini_worker` (their processing),
`gemini_synth` (request checks, responses, usage); `lines` (what a door's processing
shares: line index, result files); `sdk_models` (the model ids the installed SDKs name).
"""

from llmbatch.emulator.app import create_app
from llmbatch.emulator.client import ControlError, EmulatorControl
from llmbatch.emulator.config import EmulatorConfig
from llmbatch.emulator.server import RunningEmulator, running, serve

__all__ = [
    "ControlError",
    "EmulatorConfig",
    "EmulatorControl",
    "RunningEmulator",
    "create_app",
    "running",
    "serve",
]
