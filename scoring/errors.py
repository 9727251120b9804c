"""Typed errors of the scoring path. Each message says what was wrong, where, and what to do."""


class ScoringError(Exception):
    """Base of everything the scoring path reports instead of crashing."""

    stage = "score"


class ModelLoadError(ScoringError):
    """A model cannot be loaded: unreadable, corrupt or mismatched artifact."""

    stage = "load"


class ArtifactFetchError(ModelLoadError):
    """The model store's fetcher could not deliver the artifact (`model_store.fetcher.FetchError`)."""

    stage = "fetch"


class UnknownModelTypeError(ModelLoadError):
    """No backend is registered for the descriptor's model type."""


class WarmUpError(ModelLoadError):
    """The model loaded but failed its warm-up: it is not declared ready."""

    stage = "warm-up"


class VerificationError(ModelLoadError):
    """The model's outputs for its own verification samples are not the expected ones."""

    stage = "verify"


class RecordError(ScoringError):
    """One record cannot be scored; its batch neighbours are not affected."""

    stage = "validate"


class MissingInputError(RecordError):
    pass


class InputTypeError(RecordError):
    """An input has the wrong type, dtype or shape, or a non-finite number."""


class PredictionError(RecordError):
    """The model threw on this record, or returned a non-finite output."""

    stage = "score"
