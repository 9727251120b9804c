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
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from contract import columns


def digest(raw: bytes) -> str:
    return columns.digest(raw).hex()


class CrashJournal:
    """`path` None: no journal (nothing is counted, nothing dead-lettered for crashing)."""

    def __init__(self, path: Path | None, max_crashes: int = 2) -> None:
        self.max_crashes = max_crashes
        self.crashes: dict[str, int] = {}
        self._in_flight = ""  # the hex digests of the batch being scored, one after the other
        self._fd = -1
        self._size = 0  # of the file: the longest write so far
        if path is None:
            return
        previous = _read(path)
        for d in _split(previous.get("in_flight", "")):  # the last task died while these were scored
            self.crashes[d] = self.crashes.get(d, 0) + 1
        for d, n in previous.get("crashes", {}).items():
            self.crashes[d] = self.crashes.get(d, 0) + int(n)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
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
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _write(self) -> None:
        if self._fd < 0:
            return
        data = json.dumps({"in_flight": self._in_flight, "crashes": self.crashes}).encode()
        # Padded over what a longer write left (JSON allows trailing blanks): an ftruncate per
        # batch would cost five times the write.
        os.pwrite(self._fd, data.ljust(self._size), 0)
        self._size = max(self._size, len(data))


def _split(in_flight: str) -> list[str]:
    return [in_flight[i:i + 32] for i in range(0, len(in_flight), 32)] if isinstance(in_flight, str) else []


def _read(path: Path) -> dict:
    try:
        doc = json.loads(path.read_bytes() or b"{}")
    except (OSError, ValueError):
        return {}  # none yet, or cut short by a crash while it was written: start afresh
    return doc if isinstance(doc, dict) else {}
