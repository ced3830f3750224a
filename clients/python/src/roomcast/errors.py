"""Errors raised by the roomcast SDK."""

from __future__ import annotations

from typing import Optional

import grpc


class RoomcastError(Exception):
    """Base class of every error the SDK raises."""


class ApiError(RoomcastError):
    """roomcast refused or failed a call: `code` is the gRPC status code
    (`grpc.StatusCode.INVALID_ARGUMENT`, `UNAUTHENTICATED`, `UNAVAILABLE`, ...)
    and `details` roomcast's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: Optional[str]):
        self.method = method
        self.code = code
        self.details = details or ""
        super().__init__(f"{method}: {code.name}: {self.details}")


class TimeoutError(RoomcastError):  # noqa: A001 - python-socketio's name
    """`call` got no acknowledgement in time (or the socket is gone)."""


class StreamError(RoomcastError):
    """A stream ended with an error that retrying cannot fix (a wrong API key,
    an invalid request); `run()` raises it."""

    def __init__(self, stream: str, cause: ApiError):
        self.stream = stream
        self.cause = cause
        super().__init__(f"{stream} stream failed: {cause}")
