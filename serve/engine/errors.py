"""The engine's error types. The HTTP layer maps each class to a status code.

Suggested mapping: UnknownAdapterError -> 404; InvalidInputError, UnsupportedTaskError,
PathOutsideRootsError -> 400 (422 for a body that fails validation); AdapterError's other
subclasses -> 422; QueueFullError -> 503 (with Retry-After); EngineClosedError -> 503.
"""
from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class AdapterError(EngineError):
    """An adapter cannot be found or served. ``adapter``: the requested name; ``source``: where it came from."""

    def __init__(self, adapter: str, source: str, reason: str) -> None:
        where = f" from {source}" if source else ""
        super().__init__(f"adapter {adapter!r}{where}: {reason}")
        self.adapter = adapter
        self.source = source
        self.reason = reason

    def __reduce__(self):
        """Pickle by the constructor's arguments, so the error crosses process boundaries (Ray)."""
        return type(self), (self.adapter, self.source, self.reason)


class UnknownAdapterError(AdapterError):
    """No registry entry, local directory (under the configured roots) or Hub repo has this name."""


class PathOutsideRootsError(AdapterError):
    """The name points at a local path outside the configured adapter roots."""


class InvalidAdapterError(AdapterError):
    """The adapter's files were read but do not form a valid adapter (config, weights, format policy)."""


class CorruptAdapterError(InvalidAdapterError):
    """A file of the adapter cannot be parsed (a truncated or garbled safetensors or JSON file)."""


class IncompatibleAdapterError(AdapterError):
    """The adapter does not fit this engine's base model or limits."""


class RankTooLargeError(IncompatibleAdapterError):
    """A LoRA rank is above the engine's ``max_rank``."""


class UnsupportedAdapterError(IncompatibleAdapterError):
    """The adapter uses an option the serving slot layout cannot express."""


class InvalidInputError(EngineError):
    """A request's inputs are unusable."""


class EmptyInputError(InvalidInputError):
    """No inputs, or an empty text / token list."""


class InputTooLongError(InvalidInputError):
    """An input has more tokens than ``max_input_tokens``."""


class UnsupportedTaskError(EngineError):
    """The task cannot run with this adapter (e.g. classify with an adapter that has no classification head)."""


class QueueFullError(EngineError):
    """The engine's queue is full: the request is refused at once (overload; HTTP 503)."""


class EngineClosedError(EngineError):
    """The engine is not running (not started, or stopped)."""
