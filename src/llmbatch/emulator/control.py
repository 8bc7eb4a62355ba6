"""The control API under `/_emulator/`, for tests and demos (no key needed).

    GET    /_emulator/health                  {"ok": true, "now": virtual time}
    GET    /_emulator/clock                   {"now", "scale", "advanced"}
    POST   /_emulator/clock/advance           {"seconds": N}  (answers once batches caught up)
    GET    /_emulator/faults                  the active fault rules
    POST   /_emulator/faults                  add a rule (see faults.py), or {"rules": [...]}
    DELETE /_emulator/faults                  remove every rule
    GET    /_emulator/config                  the settings
    PATCH  /_emulator/config                  change runtime settings: rate, *_seconds,
                                              request_failure_rate/status, length_rate,
                                              models, anthropic_models, gemini_models,
                                              capacity, ...
    GET    /_emulator/models                  every door's model cards (context windows, ...)
    POST   /_emulator/models                  {"door": "openai"|"anthropic"|"gemini",
                                               "add": [id or card], "remove": [id]}
    GET    /_emulator/quotas                  enqueued-token quotas
    PUT    /_emulator/quotas                  {"openai": {model: n}, "azure": {deployment: n},
                                               "gemini": {model: n}}
    POST   /_emulator/next-batches            {"count": 1, "hold": "validating"|"finalizing",
                                               "fail_validation": {"code", "message", "line"}}
    GET    /_emulator/batches/{id}            flavour, public object and progress
    POST   /_emulator/batches/{id}/hold       {"state": "validating"|"finalizing"}
    POST   /_emulator/batches/{id}/release    let a held batch move on
    POST   /_emulator/batches/{id}/expire     expire now (unrun requests -> batch_expired;
                                              Anthropic: `expired` results)
    POST   /_emulator/batches/{id}/cancel     as the API's cancel, on any flavour
    POST   /_emulator/batches/{id}/fail       fail validation: {"code", "message", "line"}
                                              (Gemini: ids without `batches/`; hold as
                                              validating = PENDING, finalizing = RUNNING)
    POST   /_emulator/seed                    {"flavor": "openai"|"azure"|"anthropic"|"gemini",
                                               "files": N, "batches": N}
                                              objects of another app in the same org
    GET    /_emulator/calls?since=SEQ         the call log (method, path, query, status,
                                              body_sha256); DELETE clears it
    POST   /_emulator/reset                   forget all files, batches, calls and faults

Every error is 400/404/409 with the usual `{"error": {...}}` envelope.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llmbatch.emulator import gemini_batches, message_batches
from llmbatch.emulator.envelope import ApiError, bad_request, json_response, not_found
from llmbatch.emulator.faults import FaultError, parse_rule
from llmbatch.emulator.models import DOORS, SETTINGS, check_entries, entry_id, merge
from llmbatch.emulator.state import Batch
from llmbatch.emulator.surfaces import flavor_of
from llmbatch.errors import ConfigError

if TYPE_CHECKING:
    from llmbatch.emulator.core import Emulator

Json = dict[str, Any]
PREFIX = "/_emulator"


async def _body(request: Request) -> Json:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("The control API takes a JSON object body.") from None
    if not isinstance(body, dict):
        raise bad_request("The control API takes a JSON object body.")
    return body


def _number(body: Json, key: str, *, minimum: float = 0) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise bad_request(f"'{key}' must be a number >= {minimum:g}, got {value!r}.", key)
    return float(value)


def _count(body: Json, key: str, default: int | None = None, maximum: int = 10_000) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise bad_request(
            f"'{key}' must be an integer between 0 and {maximum}, got {value!r}.", key
        )
    return value


def _batch_error(data: Any) -> Json:
    if not isinstance(data, dict) or not isinstance(data.get("code"), str):
        raise bad_request(
            '\'fail_validation\' must be {"code": str, "message": str, "line": int|null}.'
        )
    line = data.get("line")
    if line is not None and (isinstance(line, bool) or not isinstance(line, int) or line < 1):
        raise bad_request("'line' must be a positive integer or null.", "line")
    message = data.get("message", f"Validation failed: {data['code']}.")
    return {"code": data["code"], "message": str(message), "param": data.get("param"), "line": line}


class Control:
    """Handlers of the control API for one emulator."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    def routes(self) -> list[Route]:
        def r(path: str, handler: Any, methods: list[str]) -> Route:
            async def endpoint(request: Request) -> Response:
                self.emu.start()
                try:
                    return json_response(await handler(request))
                except ApiError as e:
                    return e.response()
                except (ConfigError, FaultError) as e:
                    return bad_request(str(e)).response()

            return Route(PREFIX + path, endpoint, methods=methods)

        return [
            r("/health", self.health, ["GET"]),
            r("/clock", self.clock, ["GET"]),
            r("/clock/advance", self.advance, ["POST"]),
            r("/faults", self.faults, ["GET", "POST", "DELETE"]),
            r("/config", self.config, ["GET", "PATCH", "PUT"]),
            r("/models", self.models, ["GET", "POST"]),
            r("/quotas", self.quotas, ["GET", "PUT"]),
            r("/next-batches", self.next_batches, ["POST"]),
            r("/batches/{batch_id}", self.batch, ["GET"]),
            r("/batches/{batch_id}/{action}", self.batch_action, ["POST"]),
            r("/seed", self.seed, ["POST"]),
            r("/calls", self.calls, ["GET", "DELETE"]),
            r("/reset", self.reset, ["POST"]),
        ]

    async def health(self, request: Request) -> Json:
        return {"ok": True, "now": self.emu.now(), "data_dir": str(self.emu.data_dir)}

    async def clock(self, request: Request) -> Json:
        c = self.emu.clock
        return {"now": c.now(), "scale": c.scale, "advanced": c.advanced}

    async def advance(self, request: Request) -> Json:
        """Answers once batches have caught up with the new time (in a thread: the API keeps
        serving meanwhile)."""
        seconds = _number(await _body(request), "seconds")
        await run_in_threadpool(self.emu.advance, seconds)
        return await self.clock(request)

    async def faults(self, request: Request) -> Json:
        book = self.emu.faults
        if request.method == "DELETE":
            book.clear()
        elif request.method == "POST":
            body = await _body(request)
            rules = body.get("rules", [body]) if "rules" in body else [body]
            if not isinstance(rules, list):
                raise bad_request("'rules' must be a list of fault rules.")
            for rule in [parse_rule(x) for x in rules]:
                book.add(rule)
        self.emu.save_faults()
        return {"rules": book.dump()}

    async def config(self, request: Request) -> Json:
        cfg = self.emu.cfg
        if request.method != "GET":
            changes = await _body(request)
            cfg.update(changes, runtime_only=True)
            saved = self.emu.state.get_setting("runtime_config") or {}
            self.emu.state.put_setting("runtime_config", saved | changes)
            self.emu.wake.set()
        return cfg.public()

    async def models(self, request: Request) -> Json:
        cfg = self.emu.cfg
        if request.method == "POST":
            body = await _body(request)
            unknown = set(body) - {"door", "add", "remove"}
            if unknown:
                raise bad_request(
                    f"Unknown field(s) {sorted(unknown)}; allowed: door, add, remove."
                )
            door = body.get("door", "openai")
            if door not in DOORS:
                raise bad_request(f"'door' must be one of {', '.join(DOORS)}.", "door")
            key = SETTINGS[door]
            entries = list(getattr(cfg, key))
            removed = body.get("remove", [])
            if not isinstance(removed, list):
                raise bad_request("'remove' must be a list of model ids.", "remove")
            known = {entry_id(e) for e in entries}
            missing = [m for m in removed if m not in known]
            if missing:
                raise not_found(f"No {door} model named {missing[0]!r}.")
            entries = [e for e in entries if entry_id(e) not in set(removed)]
            added = check_entries(body.get("add", []), "'add'", door)
            cfg.update({key: merge(entries, added)}, runtime_only=True)
            saved = self.emu.state.get_setting("runtime_config") or {}
            self.emu.state.put_setting("runtime_config", saved | {key: getattr(cfg, key)})
        return {door: [c.public() for c in cfg.catalog(door).cards.values()] for door in DOORS}

    async def quotas(self, request: Request) -> Json:
        if request.method == "PUT":
            from llmbatch.emulator.config import check_quotas

            self.emu.cfg.quotas = check_quotas(await _body(request))
            self.emu.state.put_setting("quotas", self.emu.cfg.quotas)
        return dict(self.emu.cfg.quotas)

    async def next_batches(self, request: Request) -> Json:
        body = await _body(request)
        unknown = set(body) - {"count", "hold", "fail_validation"}
        if unknown:
            raise bad_request(
                f"Unknown field(s) {sorted(unknown)}; allowed: count, hold, fail_validation."
            )
        directive: Json = {}
        if body.get("hold") is not None:
            if body["hold"] not in ("validating", "finalizing"):
                raise bad_request("'hold' must be 'validating' or 'finalizing'.", "hold")
            directive["hold"] = body["hold"]
        if body.get("fail_validation") is not None:
            directive["fail_validation"] = _batch_error(body["fail_validation"])
        if not directive:
            raise bad_request("Give 'hold' and/or 'fail_validation'.")
        count = _count(body, "count", 1)
        self.emu.add_directive(directive, count)
        return {"pending": count, "directive": directive}

    def _get(self, request: Request) -> Batch:
        batch_id = request.path_params["batch_id"]
        batch = self.emu.state.get_batch(batch_id)
        if batch is None:
            raise not_found(f"No batch found with id '{batch_id}'.")
        return batch

    async def batch(self, request: Request) -> Json:
        b = self._get(request)
        # `last_t`: the virtual time processing has reached (see capacity.py).
        keys = (
            "total",
            "done",
            "tokens",
            "hold",
            "force_expire",
            "out_bytes",
            "err_bytes",
            "last_t",
            "output_expires_after",
        )
        obj = b.obj
        if b.flavor == "anthropic":
            obj = message_batches.view(obj, self.emu.now(), str(request.base_url))
        if b.flavor == "gemini":
            obj = gemini_batches.operation(self.emu, gemini_batches.get(self.emu, b.id).obj)
        return {
            "flavor": b.flavor,
            "batch": obj,
            "progress": {k: b.internal.get(k) for k in keys},
        }

    async def batch_action(self, request: Request) -> Json:
        action = request.path_params["action"]
        body = await _body(request)
        b = self._get(request)
        emu = self.emu
        if b.flavor == "gemini":
            return gemini_batches.control(emu, b, action, body)
        if b.flavor == "anthropic" and action not in ("cancel", "expire"):
            raise ApiError(
                409, f"A message batch cannot {action}; use expire or cancel.", retryable=False
            )
        if b.flavor == "anthropic" and action == "cancel":
            return message_batches.cancel(emu, b.id).obj
        if action == "cancel":
            batch, status = emu.cancel_batch(b.id, None)
            if status is not None:
                raise ApiError(
                    409, f"Cannot cancel a batch with status '{status}'.", retryable=False
                )
            return (batch or b).obj
        allowed = {
            "hold": ("validating", "in_progress", "finalizing"),
            "release": ("validating", "in_progress", "finalizing", "cancelling"),
            "expire": ("validating", "in_progress", "canceling"),
            "fail": ("validating",),
        }
        if action not in allowed:
            raise not_found(
                f"Unknown batch action '{action}'; use hold, release, expire, cancel or fail."
            )
        if action == "hold":
            state = body.get("state")
            if state not in ("validating", "finalizing"):
                raise bad_request("'state' must be 'validating' or 'finalizing'.", "state")
            if state == "validating":
                allowed["hold"] = ("validating",)
        error = _batch_error(body) if action == "fail" else None
        refused: list[str] = []

        def change(batch: Batch) -> bool:
            if batch.status not in allowed[action]:
                refused.append(batch.status)
                return False
            if action == "hold":
                batch.internal["hold"] = body["state"]
            elif action == "release":
                batch.internal.pop("hold", None)
                batch.internal["released"] = emu.now()  # it goes on from here, not before
            elif action == "expire":
                batch.internal["force_expire"] = True
            else:
                batch.internal["fail_validation"] = error
                batch.internal.pop("hold", None)
            return True

        updated = emu.state.update_batch(b.id, change)
        if refused:
            raise ApiError(
                409, f"Cannot {action} a batch with status '{refused[0]}'.", retryable=False
            )
        emu.wake.set()
        return (updated or b).obj

    async def seed(self, request: Request) -> Json:
        body = await _body(request)
        if body.get("flavor") == "anthropic":
            if body.get("files"):
                raise bad_request("Anthropic Message Batches have no files.", "files")
            count = _count(body, "batches", 0, 1000)
            return {"files": [], "batches": message_batches.seed(self.emu, count)}
        if body.get("flavor") == "gemini":
            if body.get("files"):
                raise bad_request("Seeding Gemini takes only 'batches'.", "files")
            count = _count(body, "batches", 0, 1000)
            return {"files": [], "batches": gemini_batches.seed(self.emu, count)}
        try:
            flavor = flavor_of(str(body.get("flavor", "openai")), self.emu.cfg)
        except KeyError:
            raise bad_request(
                "'flavor' must be 'openai', 'azure', 'anthropic', 'gemini' or a configured "
                "service.",
                "flavor",
            ) from None
        n_files, n_batches = _count(body, "files", 0, 1000), _count(body, "batches", 0, 1000)
        emu = self.emu
        model = next(iter(flavor.models(emu.cfg)), "gpt-4o-mini")
        endpoint = "/chat/completions" if flavor.azure else "/v1/chat/completions"
        files, batches = [], []
        for i in range(n_files + n_batches):
            line = {
                "custom_id": f"other-app-{i}",
                "method": "POST",
                "url": endpoint,
                "body": {"model": model, "messages": [{"role": "user", "content": f"hello {i}"}]},
            }
            if flavor.short_lines:
                line = {"custom_id": line["custom_id"], "body": line["body"]}
            content = orjson.dumps(line) + b"\n"
            file_id = emu.new_id("file-", 12)
            emu.state.file_path(file_id).write_bytes(content)
            obj = emu.file_object(
                file_id, len(content), f"other-app-{i}.jsonl", flavor.batch_purpose, None
            )
            emu.state.add_file(flavor.name, obj)
            if i < n_files:
                files.append(file_id)
                continue
            params = {
                "input_file_id": file_id,
                "endpoint": endpoint,
                "completion_window": "24h",
                "metadata": {"owner": "another-app"} if flavor.keeps_metadata else None,
                "output_expires_after": None,
            }
            batches.append(emu.create_batch(flavor, params).id)
        return {"files": files, "batches": batches}

    async def calls(self, request: Request) -> Json:
        if request.method == "DELETE":
            self.emu.state.clear_calls()
            return {"data": []}
        since = request.query_params.get("since", "0")
        if not since.isdigit():
            raise bad_request("'since' must be a call sequence number.", "since")
        return {"data": self.emu.state.calls(int(since))}

    async def reset(self, request: Request) -> Json:
        self.emu.worker.stop()
        self.emu.state.reset()
        self.emu.faults.clear()
        self.emu.save_faults()
        self.emu.clear_directives()
        from llmbatch.emulator.worker import Worker

        self.emu.worker = Worker(self.emu)
        self.emu.worker.start()
        return {"ok": True}
