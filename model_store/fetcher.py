"""Fetches a descriptor's artifact into a local cache, verified, from allowed places only.

The allow-list is a list of URL prefixes (`http://127.0.0.1:8765/`, `file:///srv/models/`,
`s3://bucket/models/`):
a location is normalised first (`..` resolved, symlinks followed for file://, user-info
dropped) and must then start with one of them. Redirects are not followed, sizes are
capped while downloading, and the SHA-256 and size must match the descriptor.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from contract import scoring_pb2 as pb
from model_store import object_store

MiB = 1024 * 1024
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class FetchError(Exception):
    """The artifact cannot be had: not allowed, not found, too big, or not the bytes the
    descriptor names. The message says which."""


@dataclass(frozen=True)
class FetchPolicy:
    allowed_prefixes: tuple[str, ...]
    max_bytes: int = 512 * MiB
    timeout_s: float = 30.0
    attempts: int = 3
    backoff_s: float = 0.5

    @classmethod
    def parse(cls, allow_list: str | Sequence[str], **kwargs) -> FetchPolicy:
        items = allow_list.split(",") if isinstance(allow_list, str) else list(allow_list)
        return cls(tuple(canonical_prefix(p.strip()) for p in items if p.strip()), **kwargs)


def canonical_prefix(prefix: str) -> str:
    url = canonical_url(prefix)
    return url if url.endswith("/") else url + "/"


def canonical_url(location: str) -> str:
    """scheme://host[:port]/normalised/path, or file:///real/path."""
    parts = urllib.parse.urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"file location {location!r} names a host; only local files are allowed")
        path = os.path.realpath(urllib.parse.unquote(parts.path))
        return "file://" + urllib.parse.quote(path) + ("/" if parts.path.endswith("/") and path != "/" else "")
    if scheme in ("http", "https"):
        host = (parts.hostname or "").lower()
        if not host:
            raise FetchError(f"location {location!r} has no host")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as err:
            raise FetchError(f"location {location!r} has an invalid port: {err}") from err
        path = os.path.normpath(urllib.parse.unquote(parts.path or "/"))
        path = path.replace("//", "/") + ("/" if parts.path.endswith("/") and path != "/" else "")
        return f"{scheme}://{host}:{port}{urllib.parse.quote(path)}"
    if scheme in object_store.SCHEMES:
        if not parts.hostname or parts.netloc != parts.hostname:
            raise FetchError(f"location {location!r} names no bucket (s3://bucket/key)")
        key = os.path.normpath("/" + urllib.parse.unquote(parts.path).lstrip("/"))
        key += "/" if parts.path.endswith("/") and key != "/" else ""
        return f"{scheme}://{parts.hostname}{urllib.parse.quote(key)}"
    raise FetchError(f"location {location!r}: scheme '{parts.scheme}' is not supported (http, https, file, s3)")


@dataclass(frozen=True)
class Fetched:
    path: Path
    fetch_ms: float
    from_cache: bool


class ArtifactFetcher:
    def __init__(self, cache_dir: Path, policy: FetchPolicy) -> None:
        self.cache_dir = Path(cache_dir)
        self.policy = policy

    def fetch(self, descriptor: pb.ModelDescriptor) -> Fetched:
        started = time.monotonic()
        kind = descriptor.WhichOneof("artifact")
        if kind == "inline_bytes":
            path, cached = self._store_inline(descriptor)
        elif kind == "location":
            path, cached = self._fetch_location(descriptor)
        else:
            raise FetchError("descriptor carries neither inline_bytes nor a location")
        return Fetched(path, (time.monotonic() - started) * 1000, cached)

    def check_allowed(self, location: str) -> str:
        url = canonical_url(location)
        if not any(url.startswith(prefix) for prefix in self.policy.allowed_prefixes):
            raise FetchError(
                f"location {location!r} (normalised {url}) is outside the allow-list "
                f"{list(self.policy.allowed_prefixes)}: publish to the model store, or "
                "add its prefix to the job's --store-allow-list"
            )
        return url

    def _target(self, sha256: str, filename: str) -> Path:
        return self.cache_dir / sha256 / filename

    def _store_inline(self, d: pb.ModelDescriptor) -> tuple[Path, bool]:
        data = d.inline_bytes
        if len(data) > self.policy.max_bytes:
            raise FetchError(f"inline artifact of {len(data)} bytes is over the limit of {self.policy.max_bytes}")
        if d.size_bytes and d.size_bytes != len(data):
            raise FetchError(f"inline artifact is {len(data)} bytes, the descriptor says {d.size_bytes}")
        actual = hashlib.sha256(data).hexdigest()
        if d.sha256 and d.sha256.lower() != actual:
            raise FetchError(f"inline artifact SHA-256 is {actual}, the descriptor says {d.sha256}")
        target = self._target(actual, "artifact")
        if target.exists():
            return target, True
        self._write_atomically(target, [data])
        return target, False

    def _fetch_location(self, d: pb.ModelDescriptor) -> tuple[Path, bool]:
        url = self.check_allowed(d.location)
        if len(d.sha256) != 64 or not d.size_bytes:
            raise FetchError("a descriptor with a location must carry its artifact's sha256 (hex) and size_bytes")
        if d.size_bytes > self.policy.max_bytes:
            raise FetchError(f"artifact of {d.size_bytes} bytes is over the limit of {self.policy.max_bytes}")
        filename = os.path.basename(urllib.parse.urlsplit(url).path) or "artifact"
        target = self._target(d.sha256.lower(), filename)
        if target.exists():
            return target, True
        if url.startswith("file://"):
            self._copy_file(urllib.parse.unquote(url[len("file://"):]), target)
        elif object_store.is_object_url(url):
            self._with_retries(url, lambda: self._read_object_once(url, d.size_bytes, target))
        else:
            self._with_retries(url, lambda: self._download_once(url, d.size_bytes, target))
        self._verify(target, d)
        return target, False

    def _copy_file(self, source: str, target: Path) -> None:
        try:
            size = os.path.getsize(source)
            if size > self.policy.max_bytes:
                raise FetchError(f"{source} is {size} bytes, over the limit of {self.policy.max_bytes}")
            with open(source, "rb") as f:
                self._write_atomically(target, iter(lambda: f.read(1 << 20), b""))
        except OSError as err:
            raise FetchError(f"cannot read {source}: {err}") from err

    def _with_retries(self, url: str, once: Callable[[], None]) -> None:
        last_error = ""
        for attempt in range(1, self.policy.attempts + 1):
            try:
                once()
                return
            except _Retryable as err:
                last_error = str(err)
                if attempt < self.policy.attempts:
                    time.sleep(self.policy.backoff_s * 2 ** (attempt - 1))
        raise FetchError(f"downloading {url} failed {self.policy.attempts} times; last: {last_error}")

    def _download_once(self, url: str, expected_size: int, target: Path) -> None:
        try:
            with requests.get(url, stream=True, allow_redirects=False,
                              timeout=(self.policy.timeout_s, self.policy.timeout_s)) as r:
                if r.status_code in RETRYABLE_STATUS:
                    raise _Retryable(f"HTTP {r.status_code} from {url}")
                if r.status_code != 200:
                    raise FetchError(f"HTTP {r.status_code} from {url}: the store does not serve it "
                                     "(redirects are not followed)")
                limit = min(expected_size, self.policy.max_bytes)
                self._write_atomically(target, self._capped(r.iter_content(1 << 20), limit, url))
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
            raise _Retryable(f"{type(err).__name__}: {err}") from err

    def _read_object_once(self, url: str, expected_size: int, target: Path) -> None:
        try:
            size = object_store.size_of(url)
            if size != expected_size:
                raise FetchError(f"{url} is {size} bytes; the descriptor says {expected_size}. "
                                 "Refused: republish the model.")
            limit = min(expected_size, self.policy.max_bytes)
            self._write_atomically(target, self._capped(object_store.chunks(url), limit, url))
        except (FileNotFoundError, PermissionError) as err:
            raise FetchError(f"{url} cannot be read ({type(err).__name__}: {err}): check that the "
                             "object exists and the TaskManagers' credentials may read it") from err
        except FetchError:
            raise
        except Exception as err:  # network, throttling, 5xx: worth another attempt
            raise _Retryable(f"{type(err).__name__}: {err}") from err

    @staticmethod
    def _capped(chunks, limit: int, url: str):
        received = 0
        for chunk in chunks:
            received += len(chunk)
            if received > limit:
                raise FetchError(f"{url} sent more than the {limit} bytes expected; refused")
            yield chunk

    def _write_atomically(self, target: Path, chunks) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(target)
        try:
            with open(partial, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
            partial.rename(target)
        finally:
            partial.unlink(missing_ok=True)

    @staticmethod
    def _verify(path: Path, d: pb.ModelDescriptor) -> None:
        size = path.stat().st_size
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if size != d.size_bytes or digest != d.sha256.lower():
            path.unlink(missing_ok=True)
            raise FetchError(
                f"artifact from {d.location} is {size} bytes with SHA-256 {digest}; the descriptor "
                f"says {d.size_bytes} bytes, {d.sha256}. Refused: republish the model."
            )


def partial_path(target: Path) -> Path:
    """A name of its own for a download in progress: the subtasks of a job share the cache,
    as threads of one process (a local MiniCluster) or as processes."""
    return target.with_name(f"{target.name}.partial-{uuid.uuid4().hex}")


class _Retryable(Exception):
    pass
