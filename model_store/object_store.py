"""Model artifacts on S3 or an S3-compatible store (MinIO, Ceph, ...), through fsspec/s3fs.

Credentials, region and endpoint come from the environment or AWS config files, as for any
AWS client (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, ...): never from a
descriptor. On a Flink cluster they are the TaskManagers' environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fsspec

SCHEMES = ("s3",)
CHUNK = 1 << 20


def _fs():
    # No listings cache: an object replaced in the bucket is seen as it is now.
    return fsspec.filesystem("s3", use_listings_cache=False)


def is_object_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES and "://" in url


def size_of(url: str) -> int:
    """The object's size in bytes; FileNotFoundError or PermissionError as S3 answers."""
    return int(_fs().info(url)["size"])


def chunks(url: str) -> Iterator[bytes]:
    with _fs().open(url, "rb", block_size=CHUNK) as f:
        while chunk := f.read(CHUNK):
            yield chunk


def upload(source: Path, url: str) -> None:
    """Put a local file at `url`, replacing what is there."""
    _fs().put_file(str(source), url)
