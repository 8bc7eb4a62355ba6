"""Reading an archive back (`llmbatch results --from-archive URL`): every result it holds
in the results envelope, from the archive alone (the database lost).

The layout is `archive.py`'s; its manifest says which version wrote a batch's folder:

- version 1: `results.jsonl` holds every result of the batch, whole;
- version 2: `results.jsonl` holds the results the provider's files do not (failures with
  their retry verdict, cancellations, requests that got no line, and every result when the
  provider's files were not archived), and the manifest's `rebuilt` names the attempts
  whose success is read from the archived provider files instead (`from`, in the order
  ingest read them; `prefix`, the custom-id prefix the batch was sent with; `attempts`, as
  inclusive `[first, last]` runs). Each is rebuilt through the provider's format, the code
  that read it at ingest, into the bytes `llmbatch results` gives from the store. This
  keeps the archive a third smaller (the bodies were written twice) and needs the
  provider's plugin installed (or its service declared in llmbatch.toml) to read it back.

Both versions are read, mixed in one archive (a worker upgraded mid-way).
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterator
from typing import IO, Any

import orjson

from llmbatch.errors import ConfigError, LlmbatchError
from llmbatch.export import jsonl_head, jsonl_tail, result_id
from llmbatch.providers import format_of
from llmbatch.results import Anomaly, parse_line
from llmbatch.targets import Target, TargetSettings, open_target

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # the newest this code writes and reads


def from_archive(
    url: str, *, queue: str | None = None, state: str | None = None, **target: Any
) -> Iterator[bytes]:
    """Every result an archive holds, in the results envelope: the newest result of each
    request (by queue and custom_id), batch by batch, from the archive alone.

    Reads the attempt maps first (one small entry per request held), then each batch's
    results: those rebuilt from its provider files (in their order), then its
    results.jsonl, keeping the lines whose attempt is its request's newest."""
    t = open_target(TargetSettings(url=url, **target))
    folders = sorted(k[: -len(MANIFEST)] for k in t.keys("") if k.endswith("/" + MANIFEST))
    newest: dict[tuple[str, str], tuple[int, str]] = {}
    for folder in folders:
        with contextlib.closing(t.open(folder + "attempts.jsonl")) as f:
            for line in _lines(f):
                a = orjson.loads(line)
                if queue is not None and a["queue"] != queue:
                    continue
                key = (a["queue"], a["custom_id"])
                if key not in newest or newest[key][0] < a["attempt"]:
                    newest[key] = (int(a["attempt"]), str(a["result_id"]))
    wanted = {rid: custom_id for (_q, custom_id), (_a, rid) in newest.items()}  # by result id
    del newest
    for folder in folders:
        with contextlib.closing(t.open(folder + MANIFEST)) as f:
            manifest = orjson.loads(f.read())
        version = manifest.get("version", 1)
        if not isinstance(version, int) or version > MANIFEST_VERSION:
            raise LlmbatchError(
                f"archive {t.location}: {folder}{MANIFEST} is version {version}, newer than "
                f"this llmbatch reads ({MANIFEST_VERSION}); upgrade llmbatch to read it"
            )
        rebuilt = manifest.get("rebuilt")
        if rebuilt and state in (None, "succeeded"):
            yield from _rebuilt(t, folder, manifest, rebuilt, wanted)
        with contextlib.closing(t.open(folder + "results.jsonl")) as f:
            for line in _lines(f):
                env = orjson.loads(line)
                if env["id"] not in wanted:
                    continue
                if state is not None and _state(env) != state:
                    continue
                del wanted[env["id"]]
                yield line + b"\n"


def _rebuilt(
    t: Target,
    folder: str,
    manifest: dict[str, Any],
    rebuilt: dict[str, Any],
    wanted: dict[str, str],
) -> Iterator[bytes]:
    """The successes a version-2 batch left to its provider files, each read by the
    provider's format (the first line of each attempt, as ingest kept it) and given in the
    envelope; the wanted ones yielded (and taken out of `wanted`)."""
    provider, sid = str(manifest["provider"]), str(manifest["store_id"])
    where = f"archive {t.location}: {folder}"
    try:
        fmt = format_of(provider)
    except ConfigError as exc:
        raise ConfigError(
            f"{where} holds results of provider {provider!r}, read back through its format: {exc}"
        ) from None
    runs: list[list[int]] = rebuilt["attempts"]
    starts = [first for first, _last in runs]
    expected = sum(last - first + 1 for first, last in runs)
    prefix, endpoint = str(rebuilt["prefix"]), manifest.get("endpoint")
    provider_json = orjson.dumps(provider)
    seen: set[int] = set()
    for name in rebuilt["from"]:
        with contextlib.closing(t.open(folder + name)) as f:
            for line in _lines(f):
                try:
                    finding = parse_line(line, prefix, endpoint, fmt)
                except Anomaly:
                    continue  # not ours, or not readable: ingest recorded nothing from it
                attempt = finding.attempt_id
                i = bisect.bisect_right(starts, attempt) - 1
                if i < 0 or attempt > runs[i][1] or attempt in seen:
                    continue  # not a success of this batch, or a second line (ingest kept the first)
                seen.add(attempt)
                if not finding.ok:
                    raise LlmbatchError(
                        f"{where}{name}: the line of attempt {attempt} is not the success "
                        "ingest recorded; the archive is damaged"
                    )
                rid = result_id(sid, attempt)
                custom_id = wanted.pop(rid, None)
                if custom_id is None:
                    continue
                yield jsonl_head(rid, custom_id, provider_json) + jsonl_tail(
                    "succeeded",
                    provider,
                    finding.status_code,
                    finding.provider_request_id,
                    finding.body,
                    None,
                    None,
                )
    if len(seen) != expected:
        raise LlmbatchError(
            f"{where}: its provider files hold {len(seen):,} of the {expected:,} successes its "
            "manifest names; the archive is damaged"
        )


def _state(env: dict[str, Any]) -> str:
    if env.get("error") is None:
        return "succeeded"
    code = str(env["error"].get("code") or "")
    return "cancelled" if code.startswith(("cancelled", "batch_cancelled")) else "failed"


def _lines(f: IO[bytes]) -> Iterator[bytes]:
    """The lines of a stream, read in chunks (never the whole file)."""
    rest = b""
    while chunk := f.read(1 << 20):
        rest += chunk
        *whole, rest = rest.split(b"\n")
        yield from (ln for ln in whole if ln.strip())
    if rest.strip():
        yield rest
