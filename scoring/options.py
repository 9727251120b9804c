"""What the scoring operator is told by the job's flags (`jobs/scoring_job.py`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScoringOptions:
    # Rows per model call: at 512 the columnar path measured 2.1x TF and 2.2x ONNX of 64.
    batch_size: int = 512
    batch_max_wait_ms: int = 50  # one PyFlink bundle (--bundle-time-ms): results wait that long anyway
    store_allow_list: tuple[str, ...] = ("http://127.0.0.1:8765/",)
    model_cache_dir: str = ""  # "": ~/.cache/flink-scoring/models of the TaskManager's user
    model_cache_size: int = 256
    max_artifact_bytes: int = 512 * 1024 * 1024
    no_model_policy: str = "hold"  # or "dead-letter"
    max_held_records: int = 10_000  # per data type
    max_held_total: int = 100_000  # per subtask, of all data types that no model serves yet
    hold_unpublished_ms: int = 60_000  # records of a data type with no descriptor wait this long for one
    max_data_types: int = 10_000  # descriptors kept in broadcast state (every subtask keeps all)
    max_inline_total_bytes: int = 256 * 1024 * 1024  # inline artifacts in broadcast state, in all
    load_poll_ms: int = 100  # first wait before looking again for a model for held records
    max_load_poll_ms: int = 2_000  # the wait doubles up to this while none comes
    load_retry_s: float = 30.0  # a failed load is tried again after this long, if still wanted
    stats_interval_ms: int = 10_000
    max_record_bytes: int = 4 * 1024 * 1024
    max_record_crashes: int = 2  # a record that killed its worker this often is dead-lettered
    max_load_crashes: int = 2  # a model version whose load killed its worker this often is not loaded again
    journal_name: str = "scoring-job"  # names the crash journals of this job's subtasks (its --group-id)
    record_format: str = "auto"  # JSON if the bytes start with "{", else protobuf; or force one
    trusted_keys: tuple[str, ...] = ()  # PEM files or directories: if any, only what they signed runs
    revoked: tuple[str, ...] = ()  # revocation lists (JSON): keys and model versions that may not run
    allowed_model_ops: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (data type, ops) a SavedModel may use
    send_pairs: bool = False  # a pairs topic is configured: rollouts that ask send ShadowPairs
