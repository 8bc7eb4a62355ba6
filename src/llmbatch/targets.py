"""Where archives are written: a folder (`file:///path`) or an S3-compatible bucket
(`s3://bucket/prefix`: AWS S3, Cloudflare R2, MinIO, ...).

A target has six verbs: `check` (at start: a bucket that does not exist or no credentials is
a ConfigError naming the setting), `put` (a local file under a key, streamed: S3 takes it in
multipart parts read from disk, a folder by a copy renamed into place, so a killed write never
leaves a partial object), `exists`, `open` (read back, streamed), `keys` (under a prefix) and
`abort_uploads` (the parts of multipart uploads a killed worker left).
Anything else going wrong is an `ArchiveUnavailable`: the archive step backs off and tries
again later; it never stops the engine.

S3 goes through boto3 (the `llmbatch[s3]` extra), not s3fs: boto3's transfer manager does
multipart uploads from a file with bounded memory and aborts the upload's parts when one
fails, and it reads credentials from the SDK's usual chain (environment, profile, instance
role) — never from our config file. Its errors never carry the secret key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import unquote, urlsplit

from llmbatch import defaults
from llmbatch.errors import ConfigError, TransientError
from llmbatch.tables import positive

CHUNK = 1 << 20


class ArchiveUnavailable(TransientError):
    """The archive target could not be written or read now (down, 5xx, slow, cut)."""


@dataclass(frozen=True)
class TargetSettings:
    """`[archive]`: where, and how to reach an S3-compatible server."""

    url: str
    endpoint_url: str | None = None
    region: str | None = None
    checksums: str = defaults.ARCHIVE_CHECKSUMS
    part_mb: int = positive(defaults.ARCHIVE_PART_MB)
    timeout: float = positive(defaults.ARCHIVE_TIMEOUT_S)


class Target(Protocol):
    location: str  # the URL, for messages and manifests (never holds a secret)

    def check(self) -> None: ...
    def put(self, key: str, path: Path, sha256: str | None = None) -> None: ...
    def exists(self, key: str) -> bool: ...
    def open(self, key: str) -> IO[bytes]: ...
    def keys(self, prefix: str) -> Iterator[str]: ...
    def abort_uploads(self, prefix: str) -> None: ...


def open_target(s: TargetSettings) -> Target:
    """The target an `[archive] url` names; ConfigError for an unknown scheme."""
    scheme, where, prefix = check_url(s)
    if scheme == "file":
        return FileTarget(Path(where), s.url)
    return S3Target(s, where, prefix)


def check_url(s: TargetSettings) -> tuple[str, str, str]:
    """(scheme, bucket or folder, prefix) of `[archive] url`, checked without a network call
    (and boto3 importable for s3://): every command checks the config file this way."""
    parts = urlsplit(s.url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"[archive] url {s.url!r}: a file URL is file:///absolute/path")
        return "file", unquote(parts.path), ""
    if parts.scheme == "s3":
        if parts.username or parts.password:
            raise ConfigError(
                "[archive] url holds credentials; give them through the environment "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or an AWS profile instead"
            )
        if not parts.hostname:
            raise ConfigError(f"[archive] url {s.url!r}: name the bucket, s3://bucket/prefix")
        if s.checksums not in ("when_supported", "when_required"):
            raise ConfigError(
                f'[archive] checksums = {s.checksums!r}: it takes "when_supported" or '
                '"when_required"'
            )
        _boto3()
        return "s3", parts.netloc, parts.path.strip("/")
    raise ConfigError(
        f"[archive] url {s.url!r}: unknown scheme {parts.scheme + '://' if parts.scheme else ''!r}; "
        "use s3://bucket/prefix or file:///path"
    )


class FileTarget:
    """A folder: each key a file, written under a hidden name and renamed into place."""

    def __init__(self, root: Path, location: str) -> None:
        self.root, self.location = root, location

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"[archive] url {self.location!r}: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise ConfigError(f"[archive] url {self.location!r}: the folder is not writable")

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, path: Path, sha256: str | None = None) -> None:
        dest = self._path(key)
        tmp = dest.with_name(f".{dest.name}.partial")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "rb") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
            fd = os.open(dest.parent, os.O_RDONLY)
            try:
                os.fsync(fd)  # the rename itself survives a power cut
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ArchiveUnavailable(f"archive {self.location}: writing {key}: {exc}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def open(self, key: str) -> IO[bytes]:
        try:
            return open(self._path(key), "rb")
        except OSError as exc:
            raise ArchiveUnavailable(f"archive {self.location}: reading {key}: {exc}") from None

    def abort_uploads(self, prefix: str) -> None:
        """Nothing to do: a killed copy left only a hidden file, overwritten next time."""

    def keys(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                yield p.relative_to(self.root).as_posix()


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise ConfigError(
            "[archive] url is s3://, which needs boto3: pip install 'llmbatch[s3]'"
        ) from None
    return boto3


class S3Target:
    """A bucket and a prefix on S3 or any S3-compatible server (`endpoint_url`)."""

    def __init__(self, s: TargetSettings, bucket: str, prefix: str) -> None:
        boto3 = _boto3()
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.location = s.url
        self.bucket, self.prefix = bucket, prefix
        self.checksummed = s.checksums == "when_supported"
        config = Config(
            region_name=s.region,
            # A slow or down target costs a tick at most about two timeouts: the archive step
            # stops at its first failure and the archive is tried again after a back-off.
            connect_timeout=min(5.0, s.timeout),
            read_timeout=s.timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            request_checksum_calculation=s.checksums,
            response_checksum_validation=s.checksums,
            # Each upload carries the SHA-256 of what it sends in a signed header (`put`),
            # which the server checks: the payload is not hashed again for the signature
            # (boto3 does so over plain HTTP). Not for servers that refuse checksums.
            s3={"payload_signing_enabled": False} if self.checksummed else None,
        )
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=s.endpoint_url, config=config
        )
        self.part = part = s.part_mb * (1 << 20)
        # Two threads: at most two parts in memory at once, whatever the file's size.
        self.transfer = TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_concurrency=2
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return _s3_errors(self.location, what)

    def check(self) -> None:
        from botocore.exceptions import ClientError, NoCredentialsError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise ConfigError(
                "[archive] url is s3:// but no AWS credentials were found: set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            ) from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket"):
                raise ConfigError(
                    f"[archive] url {self.location!r}: bucket {self.bucket!r} does not exist"
                ) from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ConfigError(
                    f"[archive] url {self.location!r}: access to bucket {self.bucket!r} refused "
                    f"({code}); check the credentials in the environment"
                ) from None
            # anything else (a 5xx): the server may be down now; archives wait and retry
        except Exception:  # unreachable now (down, slow) is no config error: archives wait
            return

    def put(self, key: str, path: Path, sha256: str | None = None) -> None:
        """Upload a file; `sha256` (hex) is its digest when the caller has taken it. With
        checksums, one PUT carries the file's SHA-256 (that one, not hashed again) and each
        part of a multipart upload its own, computed by boto3."""
        full = self._key(key)
        extra: dict[str, str] = {}
        with self._errors(f"writing {key}"):
            if path.stat().st_size >= self.part:
                if self.checksummed:
                    extra["ChecksumAlgorithm"] = "SHA256"
                self.client.upload_file(
                    str(path), self.bucket, full, Config=self.transfer, ExtraArgs=extra
                )
                return
            # One PUT, straight from the file: the transfer manager would set up its threads
            # and futures for it on every call (a few ms of CPU an object).
            if self.checksummed:
                digest = bytes.fromhex(sha256) if sha256 else _sha256(path)
                extra["ChecksumSHA256"] = base64.b64encode(digest).decode()
            with open(path, "rb") as body:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=body, **extra)

    def abort_uploads(self, prefix: str) -> None:
        """Abort the multipart uploads a killed worker left under a prefix, so their parts
        are not billed forever (one call when there are none)."""
        full = self._key(prefix)
        with self._errors(f"cleaning up {prefix}"):
            pages = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=full)
            for u in pages.get("Uploads", []):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]
                )

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        with self._errors(f"looking for {key}"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                    return False
                raise
            return True

    def open(self, key: str) -> IO[bytes]:
        with self._errors(f"reading {key}"):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return body  # type: ignore[no-any-return]

    def keys(self, prefix: str) -> Iterator[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        with self._errors(f"listing {prefix}"):
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    yield str(obj["Key"])[strip:]


def _sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.digest()


@contextlib.contextmanager
def _s3_errors(location: str, what: str) -> Iterator[None]:
    """boto3's and s3transfer's errors as ArchiveUnavailable, saying what and where."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        raise ArchiveUnavailable(
            f"archive {location}: {what}: {err.get('Code') or status} {err.get('Message') or ''}".rstrip()
        ) from None
    except (BotoCoreError, OSError) as exc:
        raise ArchiveUnavailable(f"archive {location}: {what}: {exc}") from None
    except Exception as exc:  # s3transfer wraps a failed part in its own errors
        if type(exc).__module__.startswith(("s3transfer", "boto3", "botocore", "urllib3")):
            raise ArchiveUnavailable(f"archive {location}: {what}: {exc}") from None
        raise
