"""Services that copy OpenAI's `/v1/files` + `/v1/batches` shape with small differences: one
provider kind, `openai-compatible`, and a table of the services we know.

A service is described by its `Service` (the differences from OpenAI's batch API). The shipped
table (`SHIPPED`) registers each known service as a provider through the entry point group,
like every built-in; `[providers.NAME] kind = "openai-compatible"` in llmbatch.toml declares
another one (or changes a shipped one's settings), with its base URL, key variable, limits and
differences. An unknown difference is refused by the settings check; a value the service does
not take (a completion window outside its range, a limit past the service's own) is refused
here, in one line naming the service, the setting and the limit.

What each shipped fact rests on is in `Service.sources`; `Service.unconfirmed` names the facts
no published doc or SDK we could read confirmed (docs/providers.md shows the table). The
transport is in compatible_transport.py and imported only when the engine talks to the service.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from llmbatch import defaults
from llmbatch.errors import ConfigError
from llmbatch.providers.openai_format import CHAT, ENDPOINTS, OpenAIFormat
from llmbatch.providers.plugin import Plugin, load
from llmbatch.requests import LineError, Request

KIND: Final = "openai-compatible"
MB: Final = 1024 * 1024
#: The line shapes a service may take: OpenAI's whole line, or `{"custom_id", "body"}`.
LINE_SHAPES: Final = ("openai", "custom_id_body")
#: OpenAI's `output_expires_after` bounds (seconds): 1 hour to 30 days.
EXPIRES_RANGE: Final = (3600, 2_592_000)


def window_seconds(window: str) -> int | None:
    """A completion window (`24h`, `7d`) in seconds; None if it is not one."""
    m = re.fullmatch(r"([1-9][0-9]{0,3})([hd])", window)
    if m is None:
        return None
    return int(m.group(1)) * (3600 if m.group(2) == "h" else 86_400)


@dataclass(frozen=True, slots=True)
class Service:
    """What one OpenAI-shaped service does differently from OpenAI's batch API. Every field
    defaults to OpenAI's own behaviour."""

    label: str
    base_url: str | None = None
    api_key_env: str = ""
    price_key: str = ""
    endpoints: tuple[str, ...] = (CHAT,)
    completion_window: str = "24h"  # the one sent at create
    min_window: str = "24h"  # the windows the service takes, shortest and longest
    max_window: str = "24h"
    max_requests: int = 50_000
    min_requests: int = 1
    max_bytes: int = 200 * MB
    max_line_bytes: int | None = None
    max_custom_id: int | None = None  # characters of a line's custom_id
    file_purpose: str = "batch"
    line_shape: str = "openai"
    upper_case_states: bool = False  # `COMPLETED` rather than `completed`
    wrapped_create: bool = False  # create answers `{"job": {...}}`
    list_array: bool = False  # the batch list is a bare JSON array, not a page
    # the batch is a "job": RFC 3339 times, `progress` (percent) for request counts,
    # `model_id`, `error` a string
    job_object: bool = False
    keeps_metadata: bool = True  # batch metadata is kept and listed back
    # output_expires_after sent at create (seconds; None: not sent, the service's default)
    output_expires_after: int | None = None
    sources: tuple[str, ...] = ()
    unconfirmed: tuple[str, ...] = ()

    def differences(self) -> dict[str, Any]:
        """The fields the emulator's door takes as settings (everything but the words)."""
        skip = {"label", "base_url", "api_key_env", "price_key", "sources", "unconfirmed"}
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip
        }


SHIPPED: Final[dict[str, Service]] = {
    "groq": Service(
        label="Groq",
        base_url="https://api.groq.com/openai/v1",
        api_key_env="GROQ_API_KEY",
        price_key="groq",
        endpoints=(CHAT,),
        max_window="7d",
        max_bytes=100 * MB,
        sources=(
            "console.groq.com/docs/batch: /v1/chat/completions only; lines as OpenAI's",
            "groq SDK (batches.create): metadata taken and returned",
            "groq guides: completion_window 24h to 7d; input file up to 100 MB",
        ),
        unconfirmed=("max_requests (50,000 assumed, as OpenAI)", "max_bytes (secondary source)"),
    ),
    "together": Service(
        label="Together AI",
        base_url="https://api.together.xyz/v1",
        api_key_env="TOGETHER_API_KEY",
        price_key="together",
        endpoints=(CHAT,),
        max_bytes=100 * MB,
        max_custom_id=64,
        file_purpose="batch-api",
        line_shape="custom_id_body",
        upper_case_states=True,
        wrapped_create=True,
        list_array=True,
        job_object=True,
        keeps_metadata=False,
        sources=(
            "docs.together.ai/docs/batch-inference: lines {custom_id (<= 64), body}; purpose "
            "batch-api; VALIDATING/IN_PROGRESS/COMPLETED/FAILED/EXPIRED/CANCELLED; failed "
            "requests in the error file",
            "docs.together.ai/docs/inference/batch/overview: 50,000 requests, 100 MB, 24h only",
            "docs.together.ai/reference/batch-create: create answers {job, warning}; the job "
            "has RFC 3339 times, progress, model_id, error",
            "together SDK: list_batches returns a list",
        ),
        unconfirmed=("keeps_metadata (metadata taken at create; not documented as listed back)",),
    ),
    "cerebras": Service(
        label="Cerebras",
        base_url="https://api.cerebras.ai/v1",
        api_key_env="CEREBRAS_API_KEY",
        price_key="cerebras",
        endpoints=(CHAT,),
        min_requests=10,
        max_line_bytes=1 * MB,
        sources=(
            "inference-docs.cerebras.ai/capabilities/batch (private preview): chat completions "
            "only; 200 MB; at least 10 requests",
            "inference-docs.cerebras.ai/api-reference/batch/create-batch: 50,000 requests, "
            "24h only, purpose batch, metadata; OpenAI's Batch object",
        ),
        unconfirmed=("max_line_bytes (1 MB: the constraint list was cut off where we read it)",),
    ),
}


@dataclass(frozen=True, slots=True)
class CompatibleSettings:
    """A `[providers.NAME]` table of kind `openai-compatible`: where the service is, its key
    variable, and any difference from the shipped table (None: the shipped value)."""

    kind: str = KIND
    base_url: str | None = None
    api_key_env: str | None = None
    timeout: float = defaults.PROVIDER_TIMEOUT_S
    label: str | None = None
    price_key: str | None = None
    endpoints: list[str] | None = None
    completion_window: str | None = None
    min_window: str | None = None
    max_window: str | None = None
    max_requests: int | None = None
    min_requests: int | None = None
    max_bytes: int | None = None
    max_line_bytes: int | None = None
    max_custom_id: int | None = None
    file_purpose: str | None = None
    line_shape: str | None = None
    upper_case_states: bool | None = None
    wrapped_create: bool | None = None
    list_array: bool | None = None
    job_object: bool | None = None
    keeps_metadata: bool | None = None
    output_expires_after: int | None = None


_NOT_DIFFERENCES = ("kind", "timeout")


def service_of(name: str, options: Mapping[str, Any] | None = None) -> Service:
    """The service `name` with the `[providers.NAME]` table's changes, checked: ConfigError
    in one line naming the service, the setting and the limit."""
    options = dict(options or {})
    table = f"[providers.{name}]"
    kind = options.get("kind", KIND)
    if kind != KIND:
        raise ConfigError(f"{table} kind {kind!r} is not known; the one kind is {KIND!r}")
    shipped = SHIPPED.get(name)
    if shipped is None and not options.get("base_url"):
        raise ConfigError(
            f'{table} base_url is required for an {KIND} service (e.g. "https://host/v1")'
        )
    base = shipped or Service(label=name, api_key_env=f"{name.upper().replace('-', '_')}_API_KEY")
    fields = {f.name for f in dataclasses.fields(Service)}
    changes = {
        k: v
        for k, v in options.items()
        if k in fields and k not in _NOT_DIFFERENCES and v is not None
    }
    if "endpoints" in changes:
        changes["endpoints"] = _endpoints(table, changes["endpoints"])
    service = dataclasses.replace(base, **changes)
    _check(table, service)
    return service


def _endpoints(table: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(e, str) for e in value):
        raise ConfigError(f'{table} endpoints must be a list of endpoints, like ["{CHAT}"]')
    for e in value:
        if e not in ENDPOINTS:
            raise ConfigError(
                f"{table} endpoints: {e!r} is not an endpoint llmbatch batches; known: "
                + ", ".join(sorted(ENDPOINTS))
            )
    return tuple(value)


def _check(table: str, s: Service) -> None:
    """The service's values agree with each other and with the shipped service's limits."""
    low, high = window_seconds(s.min_window), window_seconds(s.max_window)
    if low is None or high is None or low > high:
        raise ConfigError(
            f"{table} min_window/max_window must be durations like 24h or 7d, shortest first; "
            f"got {s.min_window!r} and {s.max_window!r}"
        )
    window = window_seconds(s.completion_window)
    if window is None or not low <= window <= high:
        span = s.min_window if low == high else f"{s.min_window} to {s.max_window}"
        raise ConfigError(
            f"{table} completion_window {s.completion_window!r} is not one {s.label} takes ({span})"
        )
    if s.line_shape not in LINE_SHAPES:
        raise ConfigError(
            f"{table} line_shape {s.line_shape!r} is not known; use {' or '.join(LINE_SHAPES)}"
        )
    if not 1 <= s.min_requests <= s.max_requests:
        raise ConfigError(
            f"{table} min_requests ({s.min_requests}) must be between 1 and max_requests "
            f"({s.max_requests})"
        )
    shipped = SHIPPED.get(table[len("[providers.") : -1])
    ceiling = shipped or Service(label=s.label, max_requests=100_000)
    for limit in ("max_requests", "max_bytes"):
        value, most = getattr(s, limit), getattr(ceiling, limit)
        if value < 1 or value > most:
            raise ConfigError(
                f"{table} {limit} = {value:,} is past what {s.label} takes ({most:,})"
                if value > most
                else f"{table} {limit} must be at least 1"
            )
    if s.max_line_bytes is not None and not 1 <= s.max_line_bytes <= s.max_bytes:
        raise ConfigError(
            f"{table} max_line_bytes must be between 1 and max_bytes ({s.max_bytes:,})"
        )
    if s.output_expires_after is not None:
        lo, hi = EXPIRES_RANGE
        if not lo <= s.output_expires_after <= hi:
            raise ConfigError(
                f"{table} output_expires_after = {s.output_expires_after} is outside {lo}-{hi} "
                "seconds (1 hour to 30 days)"
            )


class CompatibleFormat(OpenAIFormat):
    """OpenAI's batch shape, as one service takes it: its endpoints, its per-line and
    per-file limits checked at the door, its line shape accepted as input."""

    model_prefixes: tuple[str, ...] = ()
    gives_batch_total = False  # none of the known services documents a batch total

    def __init__(self, name: str, service: Service) -> None:
        self.name = name
        self.label = service.label
        self.price_key = service.price_key or name
        self.endpoints = frozenset(service.endpoints)
        self.default_endpoint = CHAT if CHAT in service.endpoints else service.endpoints[0]
        self.service = service
        self.min_batch = service.min_requests

    def full_line(self, item: Mapping[str, Any]) -> bool:
        # `{"custom_id", "url", "body"}` is the Python API's short form (`Queue.add` sends
        # one), as for OpenAI: taken as a whole line it lacked its method and was refused
        return "method" in item

    def parse(self, custom_id: str, line: dict[str, Any], provider: str) -> Request:
        s = self.service
        if "method" not in line and "url" not in line and "body" in line:
            # the service's own short line shape ({"custom_id", "body"}) goes to its endpoint
            line = {**line, "method": "POST", "url": self.default_endpoint}
        url = line.get("url")
        if isinstance(url, str) and url not in self.endpoints and url in ENDPOINTS:
            raise LineError(
                f"url {url} is not batched by {s.label} (it takes {', '.join(s.endpoints)}: "
                f"endpoints in [providers.{self.name}])"
            )
        req = super().parse(custom_id, line, provider)
        size = len(req.body) + len(req.endpoint) + 100  # the line as sent, near enough
        if s.max_line_bytes is not None and size > s.max_line_bytes:
            raise LineError(
                f"the request is {size:,} bytes; {s.label} takes at most {s.max_line_bytes:,} "
                f"bytes a line (max_line_bytes)"
            )
        if size > s.max_bytes:
            raise LineError(
                f"the request is {size:,} bytes; {s.label} takes at most {s.max_bytes:,} "
                f"bytes a batch file (max_bytes)"
            )
        return req

    def check_options(self, name: str, options: Mapping[str, Any]) -> None:
        service_of(name, options)

    def batch_note(self, state: str) -> str | None:
        if self.service.job_object and state in ("validating", "in_progress", "finalizing"):
            return f"{self.label} gives a percentage, not counts"
        return None


TRANSPORT: Final = "llmbatch.providers.compatible_transport:CompatibleProvider"


def _transport(name: str) -> Callable[..., Any]:
    """The transport maker for `name`: the class (and the SDK) loaded when first called."""

    def make(**settings: Any) -> Any:
        return load(TRANSPORT)(name, **settings)

    return make


def plugin_for(name: str, options: Mapping[str, Any] | None = None) -> Plugin:
    """The plugin of service `name` (shipped, or declared by its `[providers.NAME]` table)."""
    service = service_of(name, options)
    return Plugin(
        CompatibleFormat(name, service), transport=_transport(name), settings=CompatibleSettings
    )


groq_plugin = plugin_for("groq")
together_plugin = plugin_for("together")
cerebras_plugin = plugin_for("cerebras")
