"""The manager of TF Serving's model lifecycle, one per operator instance.

It loads model versions on a background thread (fetch, load, warm up: see
`scoring.loader`) and keeps the READY ones in a bounded LRU cache keyed by
(name, version), shared by every data type that uses the same model. A model a data
type is waiting for (its current one after a restore or an eviction, or its first) loads
on a thread of its own, never queued behind upgrades, which may be slow or failing. Its state
changes only on the caller's (operator) thread, when `get` collects a finished load:
a model is never visible before it is completely loaded and warmed up.

Every load runs in the subtask's load journal (`scoring.poison.LoadJournal`): a version whose
load killed the worker process (a crash in native code, not an exception) `max_crashes` times
fails at once, as a load error does, and none of its load runs again.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from contract import scoring_pb2 as pb
from scoring.errors import ModelLoadError
from scoring.loader import Servable
from scoring.poison import LoadJournal, load_key

log = logging.getLogger(__name__)

ModelKey = tuple[str, int]
LOADING, READY, ERROR = "LOADING", "READY", "ERROR"


@dataclass(frozen=True)
class LoadStatus:
    state: str
    servable: Servable | None = None
    error: str = ""


class ModelManager:
    def __init__(
        self,
        load: Callable[[pb.ModelDescriptor], Servable],
        capacity: int = 256,
        retry_after_s: float = 30.0,
        workers: int = 1,
        journal: LoadJournal | None = None,
    ) -> None:
        """`journal`: the subtask's load journal, closed by `close` (None: loads are not journalled)."""
        self._load = load
        self._journal = journal or LoadJournal(None)
        self._capacity = max(1, capacity)
        self.retry_after_s = retry_after_s
        self._ready: OrderedDict[ModelKey, Servable] = OrderedDict()
        self._loading: dict[ModelKey, tuple[pb.ModelDescriptor, Future]] = {}
        self._failed: dict[ModelKey, tuple[str, float]] = {}
        self._executors = {
            False: ThreadPoolExecutor(workers, thread_name_prefix="model-loader"),
            True: ThreadPoolExecutor(1, thread_name_prefix="model-loader-urgent"),
        }

    @staticmethod
    def key(d: pb.ModelDescriptor) -> ModelKey:
        return (d.name, d.version)

    def request(self, d: pb.ModelDescriptor, urgent: bool = False) -> None:
        """Start loading `d` in the background unless it is ready, loading, or failed lately.
        `urgent`: a data type has no other model to serve with; `d` goes ahead of upgrades."""
        key = self.key(d)
        if key in self._ready or key in self._loading or self._failed_recently(key):
            return
        self._failed.pop(key, None)
        log.info("model %s v%s: LOADING", *key)
        self._loading[key] = (d, self._executors[urgent].submit(self._journalled_load, d))

    def _journalled_load(self, d: pb.ModelDescriptor) -> Servable:
        """On a loader thread: the load, journalled while it runs (fetch, load, warm-up and
        verification all run native code); refused at once if it killed the worker too often."""
        key = load_key(d)
        crashes = self._journal.crashes_of(key)
        if crashes >= self._journal.max_crashes:
            raise ModelLoadError(
                f"loading {d.name} v{d.version} crashed the Python worker {crashes} times (a crash in "
                "native code, not an exception); it is not loaded again: publish a fixed version")
        self._journal.loading(key)
        try:
            servable = self._load(d)
        except BaseException:
            self._journal.loaded(key, ready=False)
            raise
        self._journal.loaded(key, ready=True)
        return servable

    def get(self, d: pb.ModelDescriptor, urgent: bool = False) -> LoadStatus:
        """Where `d` stands now; requests it if nobody has. Call `collect` first."""
        key = self.key(d)
        if key in self._ready:
            self._ready.move_to_end(key)
            return LoadStatus(READY, self._ready[key])
        if key in self._loading:
            return LoadStatus(LOADING)
        if self._failed_recently(key):
            return LoadStatus(ERROR, error=self._failed[key][0])
        self.request(d, urgent)
        return LoadStatus(LOADING)

    def collect(self) -> list[tuple[pb.ModelDescriptor, LoadStatus]]:
        """Take in the loads that finished since the last call: READY or ERROR each."""
        finished = []
        for key, (descriptor, future) in list(self._loading.items()):
            if future.done():
                del self._loading[key]
                finished.append((descriptor, self._take(key, future)))
        return finished

    def _take(self, key: ModelKey, future: Future) -> LoadStatus:
        try:
            servable = future.result()
        except ModelLoadError as err:
            return self._fail(key, f"{err.stage} failed: {err}")
        except Exception as err:  # a backend bug must not take the job down
            return self._fail(key, f"unexpected {type(err).__name__} while loading: {err}")
        log.info("model %s v%s: READY (fetch %.0f ms, load %.0f ms, warm-up %.0f ms)",
                 *key, servable.fetch_ms, servable.load_ms, servable.warm_up_ms)
        self._ready[key] = servable
        self._evict()
        return LoadStatus(READY, servable)

    @property
    def loading(self) -> bool:
        """Some load has not been collected yet."""
        return bool(self._loading)

    def is_loading(self, d: pb.ModelDescriptor) -> bool:
        return self.key(d) in self._loading

    def is_ready(self, d: pb.ModelDescriptor) -> bool:
        return self.key(d) in self._ready

    def ready_keys(self) -> list[ModelKey]:
        return list(self._ready)

    def close(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=False, cancel_futures=True)
        self._journal.close()
        for servable in self._ready.values():
            servable.model.release()
        self._ready.clear()

    def _fail(self, key: ModelKey, reason: str) -> LoadStatus:
        log.warning("model %s v%s: ERROR %s", *key, reason)
        self._failed[key] = (reason, time.monotonic())
        return LoadStatus(ERROR, error=reason)

    def _failed_recently(self, key: ModelKey) -> bool:
        failed = self._failed.get(key)
        return failed is not None and time.monotonic() - failed[1] < self.retry_after_s

    def _evict(self) -> None:
        while len(self._ready) > self._capacity:
            key, servable = self._ready.popitem(last=False)
            log.info("model %s v%s: UNLOADED (cache holds %d)", *key, self._capacity)
            servable.model.release()
