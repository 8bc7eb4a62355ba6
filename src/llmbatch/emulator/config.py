"""The emulator's settings and their defaults, in one place.

`create_app(**config)`, `running(**config)` and the control API's `PUT /_emulator/config`
all speak these names. Rates and durations are in *virtual* seconds (see `clock.py`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from llmbatch.emulator.models import (
    SETTINGS,
    Catalog,
    build,
    builtin_ids,
    check_entries,
    load_models_file,
    merge,
)
from llmbatch.errors import ConfigError

#: Settings the control API may change while the emulator runs.
RUNTIME_KEYS = frozenset(
    {
        "rate",
        "validating_seconds",
        "finalizing_seconds",
        "cancelling_seconds",
        "request_failure_rate",
        "request_failure_status",
        "length_rate",
        "embedding_dimensions",
        "models",
        "anthropic_models",
        "gemini_models",
        "deployments",
        "capacity",
        "gemini_shuffle_results",
    }
)
#: The keys of one `capacity` entry.
CAPACITY_KEYS = ("requests_per_second", "tokens_per_second")


#: Catalogs built, by door and model settings: read-only, so the emulators of one process (a
#: test suite starts hundreds) share them instead of each building its own (~5 ms).
_BUILT: dict[tuple[str, str], Catalog] = {}


@dataclass
class EmulatorConfig:
    """Everything that shapes the emulator's behaviour; every field has a sane default."""

    #: Requests processed per virtual second per batch. The default finishes a
    #: 50,000-request batch in half a virtual second (CPU permitting).
    rate: float = 100_000.0
    #: How long a batch stays in `validating` / `finalizing` / `cancelling` (virtual s).
    validating_seconds: float = 0.0
    finalizing_seconds: float = 0.0
    cancelling_seconds: float = 0.0
    #: Share of requests that fail into the error file, and the status they fail with.
    request_failure_rate: float = 0.0
    request_failure_status: int = 500
    #: Share of requests with a token cap (`max_tokens`, `max_completion_tokens`,
    #: `max_output_tokens`) whose output runs into it (`finish_reason: "length"`); the
    #: other replies are drawn below the cap (see `replies.py`).
    length_rate: float = 0.01
    #: Size of synthetic embedding vectors when the request gives no `dimensions`.
    embedding_dimensions: int = 16
    #: OpenAI models known to this emulator: ids, or cards as dicts (see `models.py`).
    #: Default: every id the installed `openai` SDK lists, and a few more.
    models: list[str | dict[str, Any]] = field(default_factory=lambda: builtin_ids("openai"))
    #: Anthropic models (`GET /v1/models` with `anthropic-version`); default: the
    #: installed `anthropic` SDK's ids and older dated ones.
    anthropic_models: list[str | dict[str, Any]] = field(
        default_factory=lambda: builtin_ids("anthropic")
    )
    #: Gemini models, generate and embedding ones (a card's `endpoints` are the methods it
    #: serves); default: the models `google-genai` names and those the batch API documents.
    gemini_models: list[str | dict[str, Any]] = field(default_factory=lambda: builtin_ids("gemini"))
    #: A models file (JSON or TOML, see `models.py`) added to (or replacing) the above.
    models_file: str | None = None
    #: Processing capacity per model, shared by every batch of that model (per door):
    #: `{"*" | model: {"requests_per_second": r, "tokens_per_second": t}}`. Missing
    #: (the default): unlimited, each batch runs at `rate` on its own.
    capacity: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Message Batches limits: requests per batch and bytes per create body (256 MB).
    anthropic_max_requests: int = 100_000
    anthropic_max_batch_bytes: int = 256 * 1024 * 1024
    #: Gemini's inline create-body limit (20 MB) and the largest file the Files API takes
    #: (2 GB).
    gemini_max_inline_bytes: int = 20 * 1024 * 1024
    gemini_max_file_bytes: int = 2 * 1024 * 1024 * 1024
    #: Gemini results (inline and file) in processing order rather than request order, as
    #: the service has been reported to return inline responses: clients must map by key.
    gemini_shuffle_results: bool = False
    #: Azure deployments: deployment name -> model. Default: one deployment per model,
    #: named like the model.
    deployments: dict[str, str] | None = None
    #: Seed for ids, output order and fault dice. `None`: random ids, seeded dice.
    seed: int | None = None
    #: Largest accepted upload; larger ones get 413 (OpenAI documents 512 MB).
    max_upload_bytes: int = 512 * 1024 * 1024
    #: Batch input limits (OpenAI: 50,000 lines / 200 MB; Azure: 100,000 lines / 200 MB).
    openai_max_lines: int = 50_000
    azure_max_lines: int = 100_000
    max_batch_file_bytes: int = 200 * 1024 * 1024
    max_embedding_inputs: int = 50_000
    #: Files per Azure resource, output files included.
    azure_file_limit: int = 500
    #: OpenAI-compatible services, each served at `/compatible/NAME/v1` with its
    #: differences from OpenAI's batch API (the fields of `providers.compatible.Service`
    #: but its words). Default: the shipped table (Groq, Together, Cerebras).
    services: dict[str, dict[str, Any]] = field(default_factory=lambda: shipped_services())
    #: Enqueued-prompt-token quotas: {"openai": {model: n}, "azure": {deployment: n},
    #: "gemini": {model: n}} (Gemini answers 429 at create when a batch would pass it).
    quotas: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Virtual time at start; `None` means the current wall-clock time.
    clock_start: float | None = None

    def __post_init__(self) -> None:
        self._catalogs: dict[str, Catalog] = {}

    def catalog(self, door: str) -> Catalog:
        """The models of `door` (`openai`, `anthropic` or `gemini`) with their cards (cached
        until the model settings change)."""
        found = self._catalogs.get(door)
        if found is None:
            entries = getattr(self, SETTINGS[door])
            key = (door, repr(entries))
            found = _BUILT.get(key)
            if found is None:
                found = build(door, entries)
                if len(_BUILT) >= 16:
                    _BUILT.clear()
                _BUILT[key] = found
            self._catalogs[door] = found
        return found

    def deployment_map(self) -> dict[str, str]:
        """Azure deployment name -> model name."""
        if self.deployments is None:
            return {m: m for m in self.catalog("openai")}
        return dict(self.deployments)

    def public(self) -> dict[str, Any]:
        """The settings, as the control API shows them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def update(self, values: dict[str, Any], *, runtime_only: bool = False) -> None:
        """Set fields from `values`, checking names and types; raises ConfigError."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        for key, value in values.items():
            if key not in fields or (runtime_only and key not in RUNTIME_KEYS):
                allowed = sorted(RUNTIME_KEYS if runtime_only else fields)
                raise ConfigError(f"unknown emulator setting {key!r}; known: {', '.join(allowed)}")
            setattr(self, key, _check(key, value))
        if "models_file" in values and self.models_file is not None:
            self._read_models_file(self.models_file)
        self._catalogs.clear()

    def _read_models_file(self, path: str) -> None:
        replace, doors = load_models_file(path)
        for door, added in doors.items():
            key = SETTINGS[door]
            setattr(self, key, added if replace else merge(getattr(self, key), added))


_DOOR_OF = {key: door for door, key in SETTINGS.items()}
_RATES = {"request_failure_rate", "length_rate"}
_FLOATS = {"rate", "validating_seconds", "finalizing_seconds", "cancelling_seconds"} | _RATES
_INTS = {
    "request_failure_status",
    "embedding_dimensions",
    "max_upload_bytes",
    "openai_max_lines",
    "azure_max_lines",
    "max_batch_file_bytes",
    "max_embedding_inputs",
    "azure_file_limit",
    "anthropic_max_requests",
    "anthropic_max_batch_bytes",
    "gemini_max_inline_bytes",
    "gemini_max_file_bytes",
}


def _check(key: str, value: Any) -> Any:
    if key in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"emulator setting {key!r} must be a number >= 0, got {value!r}")
        if key in _RATES and value > 1:
            raise ConfigError(f"emulator setting {key!r} must be between 0 and 1, got {value!r}")
        if key == "rate" and value == 0:
            raise ConfigError("emulator setting 'rate' must be > 0")
        return float(value)
    if key in _INTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"emulator setting {key!r} must be an integer >= 1, got {value!r}")
        if key == "request_failure_status" and not 400 <= value <= 599:
            raise ConfigError("emulator setting 'request_failure_status' must be 400-599")
        return value
    door = _DOOR_OF.get(key)
    if door is not None:
        return check_entries(value, f"emulator setting {key!r}", door)
    if key == "models_file" and value is not None and not isinstance(value, str):
        raise ConfigError("emulator setting 'models_file' must be a path")
    if key == "capacity":
        return check_capacity(value)
    if key == "gemini_shuffle_results":
        if not isinstance(value, bool):
            raise ConfigError(f"emulator setting {key!r} must be true or false, got {value!r}")
        return value
    if key == "deployments":
        if value is not None and not (
            isinstance(value, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ):
            raise ConfigError("emulator setting 'deployments' must map deployment -> model")
        return value
    if key == "quotas":
        return check_quotas(value)
    if key == "services":
        return check_services(value)
    if key in ("seed",) and value is not None and not isinstance(value, int):
        raise ConfigError("emulator setting 'seed' must be an integer or null")
    if key == "clock_start" and value is not None and not isinstance(value, int | float):
        raise ConfigError("emulator setting 'clock_start' must be a number or null")
    return value


def check_quotas(value: Any) -> dict[str, dict[str, int]]:
    """Validate `{"openai"|"azure"|"gemini": {name: tokens}}`; raises ConfigError."""
    if not isinstance(value, dict):
        raise ConfigError('quotas must look like {"openai": {"gpt-4o-mini": 1000000}}')
    out: dict[str, dict[str, int]] = {}
    for flavor, limits in value.items():
        if flavor not in ("openai", "azure", "gemini") or not isinstance(limits, dict):
            raise ConfigError(
                f"quotas: unknown flavor {flavor!r} (use 'openai', 'azure' or 'gemini')"
            )
        for name, n in limits.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ConfigError(f"quotas: {flavor}/{name} must be an integer >= 0, got {n!r}")
        out[flavor] = dict(limits)
    return out


def shipped_services() -> dict[str, dict[str, Any]]:
    """The differences of every service in llmbatch's shipped table."""
    from llmbatch.providers.compatible import SHIPPED

    return {name: s.differences() for name, s in SHIPPED.items()}


def check_services(value: Any) -> dict[str, dict[str, Any]]:
    """Validate `{name: {difference: value}}` against the differences a service may have."""
    from llmbatch.providers.compatible import Service

    if not isinstance(value, dict):
        raise ConfigError('services must look like {"groq": {"max_window": "7d"}}')
    known = set(Service(label="").differences())
    out: dict[str, dict[str, Any]] = {}
    for name, diffs in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
            raise ConfigError(f"services: {name!r} is not a service name (a-z, 0-9, - and _)")
        if not isinstance(diffs, dict) or set(diffs) - known:
            unknown = sorted(set(diffs) - known) if isinstance(diffs, dict) else diffs
            raise ConfigError(
                f"services.{name}: unknown difference(s) {unknown}; known: {', '.join(sorted(known))}"
            )
        diffs = dict(diffs)
        if "endpoints" in diffs:
            diffs["endpoints"] = tuple(diffs["endpoints"])
        out[name] = diffs
    return out


def check_capacity(value: Any) -> dict[str, dict[str, float]]:
    """Validate `{"*" | model: {"requests_per_second": r, "tokens_per_second": t}}`."""
    shape = '{"gpt-4o-mini": {"requests_per_second": 50, "tokens_per_second": 40000}}'
    if not isinstance(value, dict):
        raise ConfigError(f"emulator setting 'capacity' must look like {shape}")
    out: dict[str, dict[str, float]] = {}
    for model, limits in value.items():
        if not isinstance(limits, dict) or not limits or set(limits) - set(CAPACITY_KEYS):
            raise ConfigError(
                f"capacity[{model!r}] must give requests_per_second and/or tokens_per_second, "
                f"like {shape}"
            )
        for name, n in limits.items():
            if isinstance(n, bool) or not isinstance(n, int | float) or n <= 0:
                raise ConfigError(f"capacity[{model!r}].{name} must be a number > 0, got {n!r}")
        out[str(model)] = {k: float(v) for k, v in limits.items()}
    return out


def make_config(values: dict[str, Any]) -> EmulatorConfig:
    """Build a config from keyword arguments; unknown names raise ConfigError."""
    cfg = EmulatorConfig()
    cfg.update(values)
    return cfg
