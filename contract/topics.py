"""The job's topics: their default names (from flags or the environment), and what the
models topic must be."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

# The models topic is configuration, not a log of events. Messages are keyed by data type
# and log compaction keeps the latest one of every key for as long as the topic exists, so a
# job started without a checkpoint, any time later, still learns every data type's model.
MODELS_TOPIC_CONFIG: Mapping[str, str] = {
    "cleanup.policy": "compact",
    # A descriptor stays at least an hour before compaction may drop it, even if a newer
    # one of its data type follows.
    "min.compaction.lag.ms": str(60 * 60 * 1000),
    # Compaction cleans closed segments only: close one a day.
    "segment.ms": str(24 * 60 * 60 * 1000),
}


@dataclass(frozen=True)
class TopicNames:
    data: str = "scoring-data"
    models: str = "scoring-models"
    scores: str = "scoring-scores"
    dead_letters: str = "scoring-dead-letters"
    model_events: str = "scoring-model-events"

    @classmethod
    def from_env(cls, prefix: str = "TOPIC_", environ: Mapping[str, str] = os.environ) -> TopicNames:
        """Each name can be overridden by $TOPIC_DATA, $TOPIC_MODELS, ... ."""
        return cls(
            **{
                f.name: environ.get(prefix + f.name.upper(), f.default)
                for f in fields(cls)
            }
        )

    def all(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]

    def by_role(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def models_topic_problem(config: Mapping[str, str]) -> str:
    """Why a topic with this configuration would lose models ("" when it would not)."""
    policy = config.get("cleanup.policy", "delete")
    policies = {p.strip() for p in policy.split(",")}
    retention = config.get("retention.ms", "")
    if "compact" not in policies:
        return (f"cleanup.policy is '{policy}', not 'compact': descriptors are deleted after "
                f"retention.ms ({retention or 'the broker default'}), and a job started later "
                "without a checkpoint finds no model for its data types")
    if "delete" in policies and retention != "-1":
        return (f"cleanup.policy is '{policy}': the latest descriptor of a data type is still "
                f"deleted after retention.ms ({retention or 'the broker default'})")
    return ""
