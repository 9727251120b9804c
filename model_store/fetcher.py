"""Fetches a descriptor's artifact into a local cache, verified, from allowed places only.

The allow-list is a list of URL prefixes (`http://127.0.0.1:8765/`, `file:///srv/models/`,
`s3://bucket/models/`):
a location is normalised first (`..` resolved, symlinks followed for file://, user-info
dropped) and must then start with one of them. Redirects, proxy variables and .netrc are
not followed, sizes are capped while downloading, and a fetch has an overall deadline.

Bytes become visible in the cache only once verified: a download is hashed as it streams
into a private temporary file, and only bytes of the descriptor's SHA-256 and size are
renamed into place. The cache is a directory of the job's own user that no one else may
write to (refused otherwise), entries are named by their SHA-256, and a cache hit is
hashed again before it is used.
"""

from __future__ import annotations

import hashlib
import os
import string
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

from contract import scoring_pb2 as pb
from model_store import object_store
from model_store.repository import sha256_of

MiB = 1024 * 1024
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class FetchError(Exception):
    """The artifact cannot be had: not allowed, not found, too big, or not the bytes the
    descriptor names. The message says which."""


@dataclass(frozen=True)
class FetchPolicy:
    allowed_prefixes: tuple[str, ...]
    max_bytes: int = 512 * MiB
    timeout_s: float = 30.0  # per connection and per read
    attempts: int = 3
    backoff_s: float = 0.5
    deadline_s: float = 600.0  # the whole fetch, all attempts included

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


def default_cache_dir() -> Path:
    """~/.cache/flink-scoring/models of the user the TaskManager runs as (or $XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flink-scoring" / "models"


def private_directory(path: Path) -> Path:
    """`path`, created with mode 0700 if missing; refused if another user owns it or may write
    to it: they could put bytes there for the job to load."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if path.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise FetchError(
            f"the model cache {path} is {'a symbolic link' if path.is_symlink() else ''}"
            f"{'' if path.is_symlink() else f'owned by uid {info.st_uid} with mode {info.st_mode & 0o777:o}'}; "
            f"it must be a directory of this user's (uid {os.getuid()}) that no one else may write to: "
            "give the job another --model-cache-dir, or fix its owner and mode (chmod 700)")
    return path


class ArtifactFetcher:
    def __init__(self, cache_dir: Path | str, policy: FetchPolicy) -> None:
        self.cache_dir = Path(cache_dir) if str(cache_dir) else default_cache_dir()
        self.policy = policy
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy variables, no .netrc credentials sent to a store

    def fetch(self, descriptor: pb.ModelDescriptor) -> Fetched:
        started = time.monotonic()
        private_directory(self.cache_dir)
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
        if self._cached(target, actual, len(data)):
            return target, True
        self._write_verified(target, [data], actual, len(data), "the inline artifact")
        return target, False

    def _fetch_location(self, d: pb.ModelDescriptor) -> tuple[Path, bool]:
        url = self.check_allowed(d.location)
        if len(d.sha256) != 64 or d.sha256.strip(string.hexdigits) or d.size_bytes <= 0:
            raise FetchError("a descriptor with a location must carry its artifact's sha256 (64 hex digits) "
                             "and size_bytes")
        if d.size_bytes > self.policy.max_bytes:
            raise FetchError(f"artifact of {d.size_bytes} bytes is over the limit of {self.policy.max_bytes}")
        filename = os.path.basename(urllib.parse.urlsplit(url).path) or "artifact"
        sha256, deadline = d.sha256.lower(), time.monotonic() + self.policy.deadline_s
        target = self._target(sha256, filename)
        if self._cached(target, sha256, d.size_bytes):
            return target, True

        def write(chunks) -> None:
            self._write_verified(target, self._capped(chunks, d.size_bytes, url, deadline), sha256,
                                 d.size_bytes, f"the artifact from {d.location}")
        if url.startswith("file://"):
            self._copy_file(urllib.parse.unquote(url[len("file://"):]), write)
        elif object_store.is_object_url(url):
            self._with_retries(url, deadline, lambda: self._read_object_once(url, d.size_bytes, write))
        else:
            self._with_retries(url, deadline, lambda: self._download_once(url, write))
        return target, False

    def _cached(self, target: Path, sha256: str, size: int) -> bool:
        """A cache entry is used only if it still holds the bytes it is named by."""
        if not target.is_file():
            return False
        if target.stat().st_size == size and sha256_of(target) == sha256:
            return True
        target.unlink(missing_ok=True)  # not what was verified when it was written: fetch again
        return False

    def _copy_file(self, source: str, write: Callable) -> None:
        try:
            size = os.path.getsize(source)
            if size > self.policy.max_bytes:
                raise FetchError(f"{source} is {size} bytes, over the limit of {self.policy.max_bytes}")
            with open(source, "rb") as f:
                write(iter(lambda: f.read(1 << 20), b""))
        except OSError as err:
            raise FetchError(f"cannot read {source}: {err}") from err

    def _with_retries(self, url: str, deadline: float, once: Callable[[], None]) -> None:
        last_error = ""
        for attempt in range(1, self.policy.attempts + 1):
            try:
                once()
                return
            except _Retryable as err:
                last_error = str(err)
                pause = self.policy.backoff_s * 2 ** (attempt - 1)
                if attempt < self.policy.attempts and time.monotonic() + pause < deadline:
                    time.sleep(pause)
                else:
                    break
        cut_short = "" if attempt == self.policy.attempts else (
            f" (no time for more within the fetch's {self.policy.deadline_s:.0f}s deadline)")
        raise FetchError(f"downloading {url} failed {attempt} times{cut_short}; last: {last_error}")

    def _download_once(self, url: str, write: Callable) -> None:
        try:
            with self.http.get(url, stream=True, allow_redirects=False,
                               timeout=(self.policy.timeout_s, self.policy.timeout_s)) as r:
                if r.status_code in RETRYABLE_STATUS:
                    raise _Retryable(f"HTTP {r.status_code} from {url}")
                if r.status_code != 200:
                    raise FetchError(f"HTTP {r.status_code} from {url}: the store does not serve it "
                                     "(redirects are not followed)")
                # read1: what has arrived, so that a trickling server meets the deadline too
                write(iter(lambda: r.raw.read1(1 << 20), b""))
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError) as err:  # read1 raises urllib3's own
            raise _Retryable(f"{type(err).__name__}: {err}") from err

    def _read_object_once(self, url: str, expected_size: int, write: Callable) -> None:
        try:
            size = object_store.size_of(url)
            if size != expected_size:
                raise FetchError(f"{url} is {size} bytes; the descriptor says {expected_size}. "
                                 "Refused: republish the model.")
            write(object_store.chunks(url))
        except (FileNotFoundError, PermissionError) as err:
            raise FetchError(f"{url} cannot be read ({type(err).__name__}: {err}): check that the "
                             "object exists and the TaskManagers' credentials may read it") from err
        except FetchError:
            raise
        except Exception as err:  # network, throttling, 5xx: worth another attempt
            raise _Retryable(f"{type(err).__name__}: {err}") from err

    def _capped(self, chunks, expected: int, url: str, deadline: float):
        limit = min(expected, self.policy.max_bytes)
        received = 0
        for chunk in chunks:
            received += len(chunk)
            if received > limit:
                raise FetchError(f"{url} sent more than the {limit} bytes expected; refused")
            if time.monotonic() > deadline:
                raise FetchError(f"fetching {url} took longer than its deadline of "
                                 f"{self.policy.deadline_s:.0f}s; refused")
            yield chunk

    @staticmethod
    def _write_verified(target: Path, chunks, sha256: str, size: int, what: str) -> None:
        """Streams `chunks` into a private temporary file beside `target`, hashing them, and
        renames it into place only if they are `size` bytes of SHA-256 `sha256`. What went
        wrong is said without the bytes' own digest: an event is no oracle for a store's content."""
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")  # mode 0600
        digest, written = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    digest.update(chunk)
                    written += len(chunk)
                    f.write(chunk)
            if written != size or digest.hexdigest() != sha256:
                raise FetchError(f"{what} does not match the descriptor's SHA-256 and size ({size} bytes). "
                                 "Refused: republish the model.")
            os.replace(temporary, target)
        finally:
            Path(temporary).unlink(missing_ok=True)


def partial_path(target: Path) -> Path:
    """A name of its own for a download in progress: the subtasks of a job share the cache,
    as threads of one process (a local MiniCluster) or as processes."""
    return target.with_name(f"{target.name}.partial-{uuid.uuid4().hex}")


class _Retryable(Exception):
    pass
