"""Configuration of the scoring job: topic names, from flags or the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class TopicNames:
    data: str = "scoring-data"
    models: str = "scoring-models"
    scores: str = "scoring-scores"
    dead_letters: str = "scoring-dead-letters"
    model_events: str = "scoring-model-events"

    @classmethod
    def from_env(cls, prefix: str = "TOPIC_") -> TopicNames:
        """Each name can be overridden by $TOPIC_DATA, $TOPIC_MODELS, ... ."""
        return cls(
            **{
                f.name: os.environ.get(prefix + f.name.upper(), f.default)
                for f in fields(cls)
            }
        )

    def all(self) -> list[str]:
        return [getattr(self, f.name) for f in fields(self)]
