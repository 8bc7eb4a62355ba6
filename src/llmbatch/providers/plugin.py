"""A provider plugin: its data formats (`Format`) and where its transport and settings live.

A package registers one `Plugin` per provider under the `llmbatch.providers` entry point group;
the built-ins register the same way (pyproject.toml). The format answers every question that
differs between providers — which lines and endpoints it takes, how its result lines, usage,
prices, estimates, status words and envelope fields read — so generic modules ask the format
and never the provider's name. The transport (`Provider`, base.py) is imported only when the
engine first talks to the provider, so enqueueing never loads an SDK. See docs/providers.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmbatch.counting import openai_input_tokens
from llmbatch.heap import load_frozen
from llmbatch.providers.base import Provider
from llmbatch.request_types import Fields, Request
from llmbatch.results import Finding, Success, openai_output_text
from llmbatch.usage import UsageRecord, read_token_usage


class Format:
    """What one provider's data looks like. Subclass it and override what differs; every
    default is the neutral answer (no special status words, no calibration note, ...)."""

    name: str = ""
    label: str = ""  # how people write its name ("OpenAI"); default: `name`
    # the genai-prices provider id its models are priced under (default: `name`)
    price_key: str = ""
    # endpoints it batches, and the one a short-form item (`{"custom_id", "body"}`) goes to
    endpoints: frozenset[str] = frozenset()
    default_endpoint: str = ""
    # the field of an input line and a result line that carries its id (the user's custom_id
    # in an input line, our attempt id in a result line)
    id_field: str = "custom_id"
    # model name prefixes that are this provider's own (a usage log without a provider
    # column is priced by them; the OpenAI-shaped client refuses another provider's model)
    model_prefixes: tuple[str, ...] = ()
    # whether the provider reports a batch's total usage, to check our count against
    gives_batch_total: bool = True
    # a note for `llmbatch estimate` when its requests are counted (None: nothing to say)
    estimate_note: str | None = None
    # the official SDK's client, "module:Class", whose status errors `Result.response()`
    # raises for a failed request (None: llmbatch's own RequestFailed)
    sdk: str | None = None
    # the response header that carries a request id in that SDK's errors
    request_id_header: str = "x-request-id"
    # whether a batch's per-line validation codes read as the SDK's HTTP status errors
    line_errors_have_status: bool = True
    # the most one image can bill on any model (None: by the model's own rule, worst.py)
    image_tokens: int | None = None
    # tokens its tool-use system prompt adds when a request defines tools
    tool_prompt_tokens: int = 256
    # hosted tool type prefixes that bill per call (None: any non-client tool type does)
    server_tool_prefixes: tuple[str, ...] | None = None
    # the fewest requests a batch of this provider may hold (fewer wait for more)
    min_batch: int = 1

    # -- input ----------------------------------------------------------------------------
    def claims(self, line: Mapping[str, Any]) -> bool:
        """Whether an input line is in a shape only this provider speaks: such a line goes to
        this provider whichever was asked for (a file may mix shapes)."""
        return False

    def line_id(self, line: Mapping[str, Any]) -> object:
        """An input line's custom_id, unchecked (raise LineError for a line that is plainly in
        another shape)."""
        return line.get(self.id_field)

    def full_line(self, item: Mapping[str, Any]) -> bool:
        """Whether a Python API item is a whole input line rather than the short form
        `{"custom_id", "body"[, "url"]}`."""
        return self.claims(item)

    def parse(self, custom_id: str, line: dict[str, Any], provider: str) -> Request:
        """Validate a decoded input line (custom_id already checked) sent to `provider` (this
        format's name, or another plugin's name that shares the format); raise LineError."""
        raise NotImplementedError

    def fast_fields(self, custom_id: str, line: dict[str, Any], provider: str) -> Fields | None:
        """The common line validated in one pass, as `parse`'s Request's fields (`Fields`);
        None to take `parse` (for any line it is not sure of: it never raises, and what it
        returns must be what `parse` would). Enqueueing a file runs it for every line."""
        return None

    def item(self, custom_id: str, body: object, url: str | None, provider: str) -> Request:
        """Validate the Python API's short form: a body for `url` (default_endpoint if None)."""
        raise NotImplementedError

    # -- results --------------------------------------------------------------------------
    def result(self, attempt: int, line: dict[str, Any], endpoint: str | None) -> Finding:
        """What one decoded result line says about our attempt `attempt`; raise
        results.Anomaly when it says nothing readable."""
        raise NotImplementedError

    def success(self, attempt: int, line: dict[str, Any], endpoint: str | None) -> Success | None:
        """A fast path for the common succeeded line: the `Success` that `result` would give
        (its `Finding.success()`), or None to have `result` read the line. Ingest asks it
        first for every line, so it must be cheap and exact; the default has none."""
        return None

    def usage(self, usage: Any, endpoint: str | None) -> UsageRecord:
        """One successful result's `usage` object read into our fields (usage.py)."""
        return read_token_usage(usage, endpoint)

    # -- what users read ------------------------------------------------------------------
    def status_code(self, error_code: str | None) -> int | None:
        """The HTTP status of a result recorded without one (200 for a success), for the
        results envelope; None when the provider gives no status for it."""
        return 200 if error_code is None else None

    def output_text(self, body: dict[str, Any]) -> str:
        """The generated text of a successful body ("" if none), for CSV and the demo."""
        return openai_output_text(body)

    def batch_note(self, state: str) -> str | None:
        """A word for `batches`/`status` beside a batch in `state` (None: nothing to add)."""
        return None

    def check_options(self, name: str, options: Mapping[str, Any]) -> None:
        """Check a `[providers.NAME]` table's values beyond their types (a limit past the
        service's own, a window it does not take); raise ConfigError in one line."""

    def output_bound(self, body: Mapping[str, Any]) -> tuple[int | None, int]:
        """The worst case's output: the request's own cap on output tokens where this format
        keeps it elsewhere than the top-level `max_tokens` family (None: not set), and how
        many candidates it is billed for."""
        return None, 1

    def document_part(self, part: Mapping[str, Any]) -> bool:
        """Whether a content part brings a file of unknown size (its tokens are bounded by
        the model's context window in the worst case)."""
        return False

    def input_tokens(self, endpoint: str, model: str, body: dict[str, Any]) -> int:
        """The estimate's input token count of one request body."""
        return openai_input_tokens(endpoint, model, body)


Loader = Callable[..., Any]


def load(target: str | Loader) -> Any:
    """A `"module:attr"` reference imported, or the object itself."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Plugin:
    """One registered provider: its format, and its transport and settings by reference
    (`"module:attr"`, or the object itself), loaded on first use."""

    format: Format
    transport: str | Loader  # a callable taking the settings' fields as keywords → Provider
    settings: str | type | None = None  # a dataclass: the keys and types of [providers.NAME]
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.format.name

    def transport_class(self) -> Callable[..., Provider]:
        if "transport" not in self._cache:
            # the transport brings its SDK: imported and frozen once (heap.py)
            self._cache["transport"] = load_frozen(lambda: load(self.transport))
        loaded: Callable[..., Provider] = self._cache["transport"]
        return loaded

    def settings_class(self) -> type | None:
        if "settings" not in self._cache:
            self._cache["settings"] = None if self.settings is None else load(self.settings)
        got: type | None = self._cache["settings"]
        return got
