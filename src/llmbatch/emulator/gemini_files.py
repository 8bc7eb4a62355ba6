"""The Gemini Files API: resumable uploads, file objects, lists, deletes and downloads.

Uploads follow the protocol the `google-genai` SDK speaks: a `start` call (`POST
/upload/{v}/files`, `x-goog-upload-protocol: resumable`, the size and type in
`x-goog-upload-header-content-length|type`, the File in the JSON body) answered with an
absolute `x-goog-upload-url` on this server; then the data in chunks (`x-goog-upload-command:
upload` with `x-goog-upload-offset`, the last one `upload, finalize`). Every answer carries
`x-goog-upload-status` (`active`, `final`, `cancelled`): without it the SDK sleeps and
retries. The upload URL is the credential, as with the service (the SDK sends no key with the
data). A session survives a restart: it is two files under the work dir
(`gupload-ID.json`, the session; `gupload-ID.part`, the bytes so far).

Files live 48 virtual hours (`expirationTime`), then answer 403 and leave lists, as the
service's do. Results files a batch writes are `files/batch-…`, `source: GENERATED`, with
a `downloadUri`. Choices where the service documents nothing: an unknown or expired file
is 403 PERMISSION_DENIED "…or it may not exist" (what the service answers for a file of
another project); downloading an uploaded (not generated) file is 400 FAILED_PRECONDITION,
as the SDK documents that it cannot be; lists are newest first, `pageSize` 10 by default, at
most 100.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import TYPE_CHECKING, Any

import orjson

from llmbatch.emulator.envelope import GoogleApiError
from llmbatch.emulator.gemini_synth import pick
from llmbatch.emulator.message_batches import rfc3339

if TYPE_CHECKING:
    from pathlib import Path

    from llmbatch.emulator.core import Emulator

Json = dict[str, Any]

FLAVOR = "gemini"
FILE_TTL = 2 * 86_400
NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
#: Internal keys of a stored file object that the API does not show.
_PRIVATE = ("id", "purpose", "expires_at")


def forbidden(file_id: str) -> GoogleApiError:
    return GoogleApiError(
        403,
        f"You do not have permission to access the File {file_id} or it may not exist.",
    )


def view(obj: Json, root: str, version: str) -> Json:
    """The public File at this server's `root` URL and API `version`."""
    out = {k: v for k, v in obj.items() if k not in _PRIVATE}
    out["uri"] = f"{root}/{version}/files/{obj['id']}"
    if obj.get("source") == "GENERATED":
        out["downloadUri"] = f"{root}/download/{version}/files/{obj['id']}:download?alt=media"
    return out


def new_object(
    emu: Emulator,
    file_id: str,
    *,
    size: int,
    sha256: bytes,
    mime_type: str,
    display_name: str | None,
    source: str,
) -> Json:
    """A stored file object (with the internal `id`, `purpose`, `expires_at`)."""
    now = emu.now()
    obj: Json = {
        "id": file_id,
        "purpose": "batch" if source == "UPLOADED" else "batch_output",
        "expires_at": int(now + FILE_TTL),
        "name": f"files/{file_id}",
    }
    if display_name:
        obj["displayName"] = display_name
    obj |= {
        "mimeType": mime_type,
        "sizeBytes": str(size),
        "createTime": rfc3339(now),
        "updateTime": rfc3339(now),
        "expirationTime": rfc3339(now + FILE_TTL),
        "sha256Hash": base64.b64encode(sha256).decode(),
        "state": "ACTIVE",
        "source": source,
    }
    return obj


def file_id_of(name: str) -> str:
    """`files/abc` or `abc` -> `abc`."""
    return name.removeprefix("files/")


def get(emu: Emulator, file_id: str) -> Json:
    obj = emu.state.get_file(FLAVOR, file_id, emu.now())
    if obj is None:
        raise forbidden(file_id)
    return obj


def delete(emu: Emulator, file_id: str) -> None:
    if not emu.state.delete_file(FLAVOR, file_id, emu.now()):
        raise forbidden(file_id)


def content_path(emu: Emulator, file_id: str) -> Path:
    get(emu, file_id)
    path = emu.state.file_path(file_id)
    if not path.exists():
        raise forbidden(file_id)
    return path


def page_size(raw: str | None) -> int:
    """`pageSize` as Google's list methods take it: unset or 0 means 10, above 100 is 100."""
    if raw is None or raw == "":
        return 10
    if not raw.lstrip("-").isdigit() or int(raw) < 0:
        raise GoogleApiError(400, f"Invalid value for pageSize: {raw!r}")
    return min(int(raw), 100) or 10


def encode_token(item_id: str) -> str:
    return base64.urlsafe_b64encode(item_id.encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise GoogleApiError(400, "Invalid page token.") from None


def list_page(emu: Emulator, size: int, token: str | None) -> tuple[list[Json], str | None]:
    """One page of live files, newest first, and the token of the next page."""
    after = decode_token(token) if token else None
    files, more = emu.state.list_files(
        FLAVOR, emu.now(), purpose=None, limit=size, after=after, descending=True
    )
    return files, (encode_token(files[-1]["id"]) if more and files else None)


# --- resumable uploads -----------------------------------------------------------------------


def _session_path(emu: Emulator, upload_id: str, suffix: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{8,64}", upload_id):
        raise _upload_error(404, "The upload session does not exist.")
    return emu.state.work_path(f"gupload-{upload_id}", suffix)


def _upload_error(code: int, message: str) -> GoogleApiError:
    return GoogleApiError(code, message, headers={"x-goog-upload-status": "final"})


def start(emu: Emulator, body: Any, headers: dict[str, str]) -> str:
    """Open a resumable upload session (blocking: run off the loop); returns its id."""
    if headers.get("x-goog-upload-protocol", "").lower() != "resumable":
        raise GoogleApiError(
            400, "Uploads take x-goog-upload-protocol: resumable (the protocol the SDK uses)."
        )
    file = pick(body, "file") if isinstance(body, dict) else None
    if body and not isinstance(file, dict):
        raise GoogleApiError(400, "Invalid JSON payload received: 'file' must be a File.")
    file = file or {}
    raw_size = headers.get("x-goog-upload-header-content-length") or pick(file, "sizeBytes")
    if raw_size is None or not str(raw_size).isdigit():
        raise GoogleApiError(
            400, "x-goog-upload-header-content-length must give the size of the upload."
        )
    size = int(raw_size)
    limit = emu.cfg.gemini_max_file_bytes
    if size > limit:
        raise GoogleApiError(
            400, f"File of {size} bytes is over the {limit} byte limit of the Files API."
        )
    name = pick(file, "name")
    if name is not None:
        wanted = file_id_of(str(name))
        if not NAME.match(wanted):
            raise GoogleApiError(
                400,
                f"Invalid file name {name!r}: up to 40 lowercase letters, digits or dashes, "
                "not starting or ending with a dash.",
            )
        if emu.state.get_file(FLAVOR, wanted, emu.now()) is not None:
            raise GoogleApiError(409, f"File files/{wanted} already exists.")
        name = wanted
    mime = (
        headers.get("x-goog-upload-header-content-type")
        or pick(file, "mimeType")
        or "application/octet-stream"
    )
    upload_id = emu.new_id("", 16)
    session = {
        "size": size,
        "mime_type": mime,
        "display_name": pick(file, "displayName"),
        "name": name,
        "received": 0,
        "file": None,
    }
    _session_path(emu, upload_id, "part").write_bytes(b"")
    _session_path(emu, upload_id, "json").write_bytes(orjson.dumps(session))
    return upload_id


def chunk(
    emu: Emulator, upload_id: str, command: str, offset: str | None, data: bytes
) -> tuple[str, Json | None, int]:
    """Take one upload call (blocking). Returns the `x-goog-upload-status`, the stored File
    once finalized, and the bytes received so far."""
    meta_path = _session_path(emu, upload_id, "json")
    part = _session_path(emu, upload_id, "part")
    if not meta_path.exists():
        raise _upload_error(404, "The upload session does not exist or has ended.")
    session = orjson.loads(meta_path.read_bytes())
    commands = {c.strip() for c in command.lower().split(",") if c.strip()}
    received = int(session["received"])
    if session["file"] is not None:  # finalized: a repeated finalize gets the same file
        obj = emu.state.get_file(FLAVOR, session["file"], emu.now())
        if obj is None:
            raise _upload_error(404, "The upload session has ended.")
        return "final", obj, received
    if "cancel" in commands:
        meta_path.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
        return "cancelled", None, received
    if "query" in commands:
        return "active", None, received
    if "upload" not in commands:
        raise _upload_error(400, f"Unknown x-goog-upload-command {command!r}.")
    if offset is None or not offset.isdigit():
        raise _upload_error(400, "x-goog-upload-offset is required with an upload command.")
    at = int(offset)
    if at + len(data) == received and at != received:
        pass  # a chunk sent again after its answer was lost: already stored
    elif at != received:
        raise _upload_error(
            400, f"x-goog-upload-offset {at} does not match the {received} bytes received."
        )
    elif received + len(data) > session["size"]:
        raise _upload_error(
            400, f"The upload is larger than the {session['size']} bytes announced at start."
        )
    else:
        with part.open("r+b") as f:
            f.truncate(received)  # bytes of a chunk whose answer was never saved
            f.seek(received)
            f.write(data)
        received += len(data)
        session["received"] = received
        meta_path.write_bytes(orjson.dumps(session))
    if "finalize" not in commands:
        return "active", None, received
    if received != session["size"]:
        raise _upload_error(
            400, f"Finalized after {received} of the {session['size']} bytes announced."
        )
    return "final", _finish(emu, upload_id, session), received


def _finish(emu: Emulator, upload_id: str, session: Json) -> Json:
    file_id = session["name"] or emu.new_id("", 6)
    part = _session_path(emu, upload_id, "part")
    digest = hashlib.sha256()
    with part.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    part.replace(emu.state.file_path(file_id))
    obj = new_object(
        emu,
        file_id,
        size=int(session["size"]),
        sha256=digest.digest(),
        mime_type=str(session["mime_type"]),
        display_name=session["display_name"],
        source="UPLOADED",
    )
    emu.state.add_file(FLAVOR, obj)
    session["file"] = file_id
    _session_path(emu, upload_id, "json").write_bytes(orjson.dumps(session))
    return obj
