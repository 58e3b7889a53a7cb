"""Engine errors -> HTTP status and an OpenAI-style JSON body ``{"error": {message, type, code}}``."""
from __future__ import annotations

import logging

from fastapi.responses import JSONResponse

from ..engine import errors as engine_errors
from .schemas import ErrorBody, ErrorResponse

logger = logging.getLogger(__name__)

# Most specific first: the first class the error is an instance of decides.
_STATUS: list[tuple[type[Exception], int, str]] = [
    (engine_errors.UnknownAdapterError, 404, "model_not_found"),
    (engine_errors.PathOutsideRootsError, 403, "path_not_allowed"),
    (engine_errors.RankTooLargeError, 400, "rank_too_large"),
    (engine_errors.UnsupportedAdapterError, 400, "unsupported_adapter"),
    (engine_errors.IncompatibleAdapterError, 400, "incompatible_adapter"),
    (engine_errors.CorruptAdapterError, 400, "corrupt_adapter"),
    (engine_errors.InvalidAdapterError, 400, "invalid_adapter"),
    (engine_errors.InputTooLongError, 400, "context_length_exceeded"),
    (engine_errors.EmptyInputError, 400, "empty_input"),
    (engine_errors.InvalidInputError, 400, "invalid_input"),
    (engine_errors.UnsupportedTaskError, 400, "unsupported_task"),
    (engine_errors.QueueFullError, 503, "overloaded"),
    (engine_errors.EngineClosedError, 503, "not_ready"),
]
RETRY_AFTER_SECONDS = 1


class HTTPError(Exception):
    """An error the HTTP layer raises itself (bad request shape, auth, missing features)."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def error_response(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = ErrorResponse(error=ErrorBody(message=message, type=kind, code=code, param=param))
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def status_of(err: BaseException) -> tuple[int, str]:
    """(HTTP status, error code) for an exception raised by the engine (possibly wrapped by Ray)."""
    for cls, status, code in _STATUS:
        if isinstance(err, cls):
            return status, code
    return 500, "internal_error"


def engine_error_response(err: BaseException) -> JSONResponse:
    status, code = status_of(err)
    if status == 500:
        logger.exception("request failed", exc_info=err)
        return error_response(500, f"internal error: {type(err).__name__}", code)
    return error_response(status, _message(err), code)


def _message(err: BaseException) -> str:
    """The engine's own message; Ray wraps remote errors, so prefer the innermost cause's text."""
    cause = getattr(err, "cause", None)
    return str(cause if cause is not None else err).strip().splitlines()[-1]
