"""Per-model-version usage statistics, as the Flink model server of FLIP-23 keeps them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class ModelStats:
    name: str
    version: int
    since_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    usage: int = 0  # records scored
    batches: int = 0
    failed: int = 0  # records the model could not score
    total_ms: float = 0.0
    min_ms: float = float("inf")  # per batch
    max_ms: float = 0.0
    serve_ms: float = 0.0  # columnar path: all the Python time of its batches, the model calls included

    def record_batch(self, size: int, failed: int, duration_ms: float) -> None:
        self.usage += size - failed
        self.failed += failed
        self.batches += 1
        self.total_ms += duration_ms
        self.min_ms = min(self.min_ms, duration_ms)
        self.max_ms = max(self.max_ms, duration_ms)

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.batches if self.batches else 0.0

    def as_map(self) -> dict[str, float]:
        return {
            "since_ms": float(self.since_ms),
            "usage": float(self.usage),
            "failed": float(self.failed),
            "batches": float(self.batches),
            "total_ms": self.total_ms,
            "min_ms": self.min_ms if self.batches else 0.0,
            "max_ms": self.max_ms,
            "mean_ms": self.mean_ms,
            "serve_ms": self.serve_ms,
        }


@dataclass
class OperatorTotals:
    """What one operator instance did since it opened, across all model versions: the numbers
    behind its Flink metrics (group `scoring`). Each is a running total, so a rate or a mean
    (e.g. `inference_micros_total / inference_batches`) is taken by the metrics system."""

    num_inferences: int = 0  # records scored
    failed_inferences: int = 0  # records a model could not score
    inference_batches: int = 0
    failed_batches_counter: int = 0  # batches none of whose records could be scored
    inference_micros_total: int = 0  # time in model calls
    model_loads: int = 0  # loads that ended READY
    model_load_millis_total: int = 0  # fetch + load + warm-up of those
    model_swaps: int = 0

    def record_batch(self, size: int, failed: int, elapsed_s: float) -> None:
        self.num_inferences += size - failed
        self.failed_inferences += failed
        self.inference_batches += 1
        self.failed_batches_counter += int(failed == size)
        self.inference_micros_total += int(elapsed_s * 1e6)

    def record_load(self, millis: float) -> None:
        self.model_loads += 1
        self.model_load_millis_total += int(millis)
