"""Errors that carry a message meant for a person: what is wrong, where, and how to fix it.

The CLI prints these as one line (no traceback) and exits non-zero; anything else is a bug.
"""


class LMForgeError(Exception):
    """Base class for every error lmforge raises on bad input."""


class ConfigError(LMForgeError):
    """A config file, field or override is unknown or has the wrong type/value."""


class DataError(LMForgeError):
    """A data path is missing, empty, binary or not UTF-8, or a record is malformed."""


class TokenizerError(LMForgeError):
    """A tokenizer cannot be trained/loaded, or does not match the model."""


class CheckpointError(LMForgeError):
    """A checkpoint or model directory is missing, corrupt or truncated."""


class TrainingError(LMForgeError):
    """Training cannot go on (for example the loss became NaN)."""


class GenerationError(LMForgeError):
    """A generation request cannot be served (for example the prompt is too long)."""
