"""Chat Completions and Responses replies: text, JSON for a schema, or a function call.

`structured.py` says what a request asks for; this module writes it in each endpoint's
shape. A JSON reply is an instance of the schema (`schema.instance`), a `json_object` reply
an object of a few words, a call's arguments an instance of the function's parameters —
all chosen by the request's hash, so the same request gets the same reply. Chat:
`message.tool_calls` with `finish_reason: "tool_calls"` — or `"stop"` when `tool_choice`
named the function, as the service answers — and `content: null`. Responses: a
`function_call` output item. Lengths and the cap follow `replies.py`.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from llmbatch.emulator.envelope import RequestError
from llmbatch.emulator.instances import instance
from llmbatch.emulator.replies import (
    Usage,
    cap_of,
    fit,
    ident,
    is_reasoning,
    text_length,
    text_tokens,
    words,
    words_bytes,
)
from llmbatch.emulator.structured import Format, Plan, chat_plan, echo_tools, responses_plan

Json = dict[str, Any]
_JSON_OBJECT_SCHEMA: Json = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["answer", "confidence"],
}


def _json_text(schema: Json, seed: bytes) -> str:
    value = instance(schema, random.Random(seed))
    return orjson.dumps(value).decode()


def _content(
    fmt: Format, h: bytes, prompt: int, cap: int | None, length_rate: float, ceiling: int
) -> tuple[str | None, int, bool]:
    """(JSON text, or None for words; output tokens; whether the cap cut it) of a reply
    that calls nothing."""
    if fmt.kind == "text":
        n, hit = text_length(h, prompt, cap, length_rate, ceiling)
        return None, n, hit
    schema = fmt.schema if fmt.kind == "json_schema" and fmt.schema else _JSON_OBJECT_SCHEMA
    return fit(_json_text(schema, h), h, cap, length_rate)


def _reasoning(model: str, visible: int, structured: bool, cap: int | None) -> tuple[int, int]:
    """(visible tokens, reasoning tokens): a text reply's total splits in half; a
    structured one thinks as long as it writes, within the cap."""
    if not is_reasoning(model):
        return visible, 0
    if not structured:
        return visible - visible // 2, visible // 2
    room = visible if cap is None else max(0, min(visible, cap - visible))
    return visible, room


def _call(
    plan: Plan, h: bytes, salt: str, cap: int | None, length_rate: float
) -> tuple[str, str, int, bool]:
    """(call id, arguments, tokens, whether the cap cut it) of the planned call."""
    assert plan.call is not None
    name = plan.call.name
    arguments, n, hit = fit(_json_text(plan.call.parameters, h + b"call"), h, cap, length_rate)
    if not hit:
        n += text_tokens(name)
    return ident("call_", h, salt)[:29], arguments, n, hit


def chat(
    body: Json,
    h: bytes,
    model: str,
    created: int,
    salt: str,
    prompt: int,
    length_rate: float,
    ceiling: int,
) -> tuple[Json, Usage]:
    """A chat completion for a checked chat request."""
    n_choices = body.get("n") or 1
    if isinstance(n_choices, bool) or not isinstance(n_choices, int) or not 1 <= n_choices <= 8:
        raise RequestError("Invalid 'n': must be an integer between 1 and 8.", "n")
    plan = chat_plan(body, h)
    cap, _ = cap_of("chat", body)
    choices, out_tokens, reasoning_total = [], 0, 0
    for i in range(n_choices):
        hi = h[i:] + h[:i]
        message: Json = {"role": "assistant", "content": None, "refusal": None}
        message["annotations"] = []
        text: str | None = None
        if plan.call is not None:
            call_id, arguments, visible, hit = _call(plan, hi, salt, cap, length_rate)
            function = {"name": plan.call.name, "arguments": arguments}
            message["tool_calls"] = [{"id": call_id, "type": "function", "function": function}]
            finish = "length" if hit else ("stop" if plan.named else "tool_calls")
        else:
            text, visible, hit = _content(plan.format, hi, prompt, cap, length_rate, ceiling)
            finish = "length" if hit else "stop"
        structured = plan.call is not None or text is not None
        shown, reasoning = _reasoning(model, visible, structured, cap)
        if plan.call is None:
            message["content"] = text if text is not None else words(hi, shown)
        choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": finish})
        out_tokens += shown + reasoning
        reasoning_total += reasoning
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": out_tokens,
        "total_tokens": prompt + out_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_total,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    out = {"id": ident("chatcmpl-", h, salt), "object": "chat.completion", "created": created}
    out |= {"model": model, "choices": choices, "usage": usage, "service_tier": "default"}
    out["system_fingerprint"] = "fp_emulator"
    return out, Usage(prompt, out_tokens, reasoning_total)


#: A plain chat reply as orjson writes `chat`'s dicts.
_PLAIN_REPLY = (
    b'{"id":"%s%s,"choices":[{"index":0,"message":{"role":"assistant","content":"%s",'
    b'"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"%s"}],"usage":'
    b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,'
    b'"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    b'"completion_tokens_details":{"reasoning_tokens":%d,"audio_tokens":0,'
    b'"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},'
    b'"service_tier":"default","system_fingerprint":"fp_emulator"}'
)


def plain_chat_json(
    body: Json,
    h: bytes,
    model: str,
    created: int,
    salt: str,
    prompt: int,
    length_rate: float,
    ceiling: int,
) -> tuple[bytes, Usage] | None:
    """`chat`'s reply as the JSON orjson writes of it, from a template, when the request
    asks for plain text in one choice (a batch's usual line); None otherwise. The batch
    worker writes a line per request: building and encoding `chat`'s dicts cost twice this."""
    if not is_plain_chat(body, h):
        return None
    cap, _ = cap_of("chat", body)
    head = b'","object":"chat.completion","created":%d,"model":%s' % (created, orjson.dumps(model))
    encoded, out, reasoning = plain_chat_reply(
        ident("chatcmpl-", h, salt).encode(),
        h,
        head,
        is_reasoning(model),
        prompt,
        cap,
        length_rate,
        ceiling,
    )
    return encoded, Usage(prompt, out, reasoning)


def is_plain_chat(body: Json, h: bytes) -> bool:
    """Whether a chat request asks for plain text in one choice (`plain_chat_reply`'s);
    raises RequestError as `chat` would."""
    n_choices = body.get("n") or 1
    if type(n_choices) is not int or n_choices != 1:
        return False
    plan = chat_plan(body, h)
    return plan.call is None and plan.format.kind == "text"


def plain_chat_reply(
    ident_: bytes,
    h: bytes,
    head: bytes,
    reasoning_model: bool,
    prompt: int,
    cap: int | None,
    length_rate: float,
    ceiling: int,
) -> tuple[bytes, int, int]:
    """A plain chat reply's JSON, its output tokens and its reasoning tokens, from what it
    depends on: its id (`ident`), the request's hash, `head` (the `object`, `created` and
    `model` fields, encoded once per batch) and its counts."""
    visible, hit = text_length(h, prompt, cap, length_rate, ceiling)
    if reasoning_model:  # `_reasoning` of a text reply
        shown, reasoning = visible - visible // 2, visible // 2
    else:
        shown, reasoning = visible, 0
    out = shown + reasoning
    encoded = _PLAIN_REPLY % (
        ident_,
        head,
        words_bytes(h, shown),
        b"length" if hit else b"stop",
        prompt,
        out,
        prompt + out,
        reasoning,
    )
    return encoded, out, reasoning


def responses(
    body: Json,
    h: bytes,
    model: str,
    created: int,
    salt: str,
    prompt: int,
    length_rate: float,
    ceiling: int,
) -> tuple[Json, Usage]:
    """A Responses API response for a checked request."""
    plan = responses_plan(body, h)
    cap, _ = cap_of("responses", body)
    text: str | None = None
    if plan.call is not None:
        call_id, arguments, visible, hit = _call(plan, h, salt, cap, length_rate)
        item: Json = {"type": "function_call", "id": ident("fc_", h, salt)}
        item |= {"call_id": call_id, "name": plan.call.name, "arguments": arguments}
        item["status"] = "incomplete" if hit else "completed"
    else:
        text, visible, hit = _content(plan.format, h, prompt, cap, length_rate, ceiling)
    structured = plan.call is not None or text is not None
    shown, reasoning = _reasoning(model, visible, structured, cap)
    if plan.call is None:
        part: Json = {"type": "output_text", "annotations": [], "logprobs": []}
        part["text"] = text if text is not None else words(h, shown)
        item = {"type": "message", "id": ident("msg_", h, salt), "role": "assistant"}
        item |= {"status": "incomplete" if hit else "completed", "content": [part]}
    n = shown + reasoning
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": n,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + n,
    }
    fmt = plan.format
    text_config: Json = {"type": fmt.kind}
    if fmt.kind == "json_schema":
        text_config |= {"name": fmt.name, "schema": fmt.schema, "strict": fmt.strict}
        text_config["description"] = ((body.get("text") or {}).get("format") or {}).get(
            "description"
        )
    out: Json = {"id": ident("resp_", h, salt), "object": "response", "created_at": created}
    out |= {"status": "incomplete" if hit else "completed", "error": None}
    out["incomplete_details"] = {"reason": "max_output_tokens"} if hit else None
    out |= {"instructions": body.get("instructions"), "max_output_tokens": cap}
    out |= {"model": model, "output": [item], "parallel_tool_calls": True}
    out |= {"previous_response_id": None, "reasoning": {"effort": None, "summary": None}}
    out |= {"store": False, "temperature": body.get("temperature", 1.0)}
    out["text"] = {"format": text_config}
    out |= {"tool_choice": body.get("tool_choice", "auto"), "tools": echo_tools(body)}
    out |= {"top_p": body.get("top_p", 1.0)}
    out |= {"truncation": "disabled", "usage": usage, "user": None, "metadata": {}}
    return out, Usage(prompt, n, reasoning)
