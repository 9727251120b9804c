"""Records that crash their worker: a journal of the batch being scored, read after a restart.

A record whose model call kills the process (a crash in native code, an abort; not an
exception, which only fails the record) fails its task, and the restarted task reads the same
record again, and again. So before each model call the operator writes the digests of the
batch's records to a journal file of its own, and clears them after. A task that opens and
finds records in its journal died scoring them: each counts one crash. A record with a crash
is scored alone, so that a second crash names it; one that crashed its worker `max_crashes`
times is dead-lettered instead, and the job goes on (Flink's "poison pill" pattern; Kafka
Streams' DeserializationExceptionHandler for the same reason).

The journal is a small JSON file written in place (no fsync: it must outlive the process,
not the machine); about 0.5 us a record at batches of 64. Records that then score are forgotten.

Model loads run native code too (a backend's loader, TensorFlow, ONNX Runtime, pypmml's JVM),
and a restarted task loads the same descriptor again (broadcast state, the compacted models
topic): `LoadJournal`, a second file beside the first, keeps the loads in flight the same way.
A version whose load killed the worker `max_crashes` times in a row is not loaded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from contract import columns
from contract import scoring_pb2 as pb


def digest(raw: bytes) -> str:
    return columns.digest(raw).hex()


class CrashJournal:
    """`path` None: no journal (nothing is counted, nothing dead-lettered for crashing)."""

    def __init__(self, path: Path | None, max_crashes: int = 2) -> None:
        self.max_crashes = max_crashes
        self._in_flight = ""  # the hex digests of the batch being scored, one after the other
        self._file = JournalFile(path)
        previous = self._file.previous
        # The last task died while the records in flight were scored.
        self.crashes: dict[str, int] = _crashes(previous, _split(previous.get("in_flight", "")))
        self._write()

    def crashes_of(self, raw: bytes) -> int:
        return self.crashes_of_digest(digest(raw)) if self.crashes else 0

    def crashes_of_digest(self, hex_digest: str) -> int:
        return self.crashes.get(hex_digest, 0)

    def poisoned(self, raw: bytes) -> bool:
        return self.crashes_of(raw) >= self.max_crashes

    def scoring(self, raws: Sequence[bytes]) -> None:
        """Before a model call: these records are in flight."""
        self._in_flight = "".join(digest(r) for r in raws)
        self._write()

    def scoring_digests(self, digests: bytes) -> None:
        """Before a model call on a batch of columns: its rows' 16-byte digests, one after the other."""
        self._in_flight = digests.hex()
        self._write()

    def scored(self) -> None:
        """After it: none is in flight, and those that had crashed before did not this time."""
        if self.crashes:
            for d in _split(self._in_flight):
                self.crashes.pop(d, None)
        self._in_flight = ""
        self._write()

    def close(self) -> None:
        self._file.close()

    def _write(self) -> None:
        self._file.write({"in_flight": self._in_flight, "crashes": self.crashes})


def load_key(d: pb.ModelDescriptor) -> str:
    """What a load crash is counted against: the version and its artifact's SHA-256 (of the
    inline bytes when the descriptor names none), so that other bytes published under the same
    version are not blamed. Version and digest first: neither holds a ':', the name may."""
    sha256 = d.sha256.lower() or (hashlib.sha256(d.inline_bytes).hexdigest() if d.inline_bytes else "")
    return f"{d.version}:{sha256}:{d.name}"


class LoadJournal:
    """The model loads in flight (`load_key`s), for the same reason as the records': a task that
    finds loads in its journal died running them. Each counts one crash; a load that ends READY
    forgets its version's count (a worker killed once while it loaded, for any reason, does not
    mark it for good); one that raises keeps it. Several loads run at once (the manager's loader
    threads): the journal holds them all. `path` None: nothing is counted."""

    def __init__(self, path: Path | None, max_crashes: int = 2) -> None:
        self.max_crashes = max_crashes
        self._lock = threading.Lock()
        self._in_flight: list[str] = []
        self._file = JournalFile(path)
        previous = self._file.previous
        in_flight = previous.get("in_flight", [])
        self.crashes: dict[str, int] = _crashes(previous, in_flight if isinstance(in_flight, list) else [])
        self._write()

    def crashes_of(self, key: str) -> int:
        with self._lock:
            return self.crashes.get(key, 0)

    def loading(self, key: str) -> None:
        """Before the load's first native call (fetch, load, warm-up, verification)."""
        with self._lock:
            self._in_flight.append(key)
            self._write()

    def loaded(self, key: str, ready: bool) -> None:
        """After it, READY or an exception: the worker lived through it."""
        with self._lock:
            if key in self._in_flight:
                self._in_flight.remove(key)
            if ready:
                self.crashes.pop(key, None)
            self._write()

    def close(self) -> None:
        """The task ends, its worker alive: loads still running (the manager does not wait for
        them) are not counted, and a later end of theirs writes nothing."""
        with self._lock:
            self._in_flight.clear()
            self._write()
            self._file.close()

    def _write(self) -> None:
        self._file.write({"in_flight": self._in_flight, "crashes": self.crashes})


class JournalFile:
    """One subtask's journal: a small JSON document in a file of its own (mode 600, in a
    directory of mode 700), rewritten in place. `previous`: what the last task left in it."""

    def __init__(self, path: Path | None) -> None:
        self.previous: dict = {}
        self._fd = -1
        self._size = 0  # of the file: the longest write so far
        if path is None:
            return
        self.previous = _read(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    def write(self, doc: dict) -> None:
        if self._fd < 0:
            return
        data = json.dumps(doc).encode()
        # Padded over what a longer write left (JSON allows trailing blanks): an ftruncate per
        # batch would cost five times the write.
        os.pwrite(self._fd, data.ljust(self._size), 0)
        self._size = max(self._size, len(data))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _crashes(previous: dict, died_in: Iterable[str]) -> dict[str, int]:
    """The counts the last task left, plus one for each key it died in."""
    crashes: dict[str, int] = {}
    for key in died_in:
        crashes[key] = crashes.get(key, 0) + 1
    counted = previous.get("crashes", {})
    for key, n in (counted.items() if isinstance(counted, dict) else ()):
        crashes[key] = crashes.get(key, 0) + int(n)
    return crashes


def _split(in_flight: str) -> list[str]:
    return [in_flight[i:i + 32] for i in range(0, len(in_flight), 32)] if isinstance(in_flight, str) else []


def _read(path: Path) -> dict:
    try:
        doc = json.loads(path.read_bytes() or b"{}")
    except (OSError, ValueError):
        return {}  # none yet, or cut short by a crash while it was written: start afresh
    return doc if isinstance(doc, dict) else {}
