"""Errors raised by the SDK.

Every GraphQL error of scenario-hub carries ``extensions.code`` (and, for
``BAD_USER_INPUT``, ``extensions.field``); the SDK raises it as a
:class:`HubError`, or the subclass registered for its code, so callers can
either ``except LeaseLost:`` or check ``error.code == "LEASE_LOST"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = [
    "BadUserInput",
    "Conflict",
    "Forbidden",
    "HubConnectionError",
    "HubError",
    "InternalError",
    "InvalidTransition",
    "LeaseLost",
    "LimitExceeded",
    "NotFound",
    "PayloadSchemaViolation",
    "RunClosed",
    "Unauthenticated",
    "Unavailable",
    "VersionConflict",
    "error_from_graphql",
]


class HubError(Exception):
    """A GraphQL error answered by scenario-hub (or a failure to reach it).

    Attributes:
        code: ``extensions.code`` of the (first) error, e.g. ``"LEASE_LOST"``;
            None when the server gave none.
        field: ``extensions.field``: the offending input field, when given.
        message: the server's message.
        path: the GraphQL ``path`` of the error, when given.
        errors: every GraphQL error of the answer, as the server sent them.
    """

    #: The code a subclass stands for (``None`` on the base class).
    CODE: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        path: Sequence[str | int] | None = None,
        errors: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.CODE
        self.field = field
        self.path: list[str | int] = list(path or [])
        self.errors: list[dict[str, Any]] = [dict(e) for e in errors]

    @property
    def retryable(self) -> bool:
        """True when trying again later may succeed (``UNAVAILABLE``, connection failures)."""
        return False

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        code = self.code or "ERROR"
        return f"{code}: {self.message}{where}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, field={self.field!r}, message={self.message!r})"


class NotFound(HubError):
    """``NOT_FOUND``: the run, engine, event or template does not exist."""

    CODE = "NOT_FOUND"


class BadUserInput(HubError):
    """``BAD_USER_INPUT``: an invalid argument; ``field`` names it."""

    CODE = "BAD_USER_INPUT"


class PayloadSchemaViolation(HubError):
    """``PAYLOAD_SCHEMA_VIOLATION``: a payload does not match its event type's JSON Schema."""

    CODE = "PAYLOAD_SCHEMA_VIOLATION"


class VersionConflict(HubError):
    """``VERSION_CONFLICT``: ``expectedVersion`` is not the engine's current state version."""

    CODE = "VERSION_CONFLICT"


class InvalidTransition(HubError):
    """``INVALID_TRANSITION``: a run status change the lifecycle does not allow."""

    CODE = "INVALID_TRANSITION"


class RunClosed(HubError):
    """``RUN_CLOSED``: the run is COMPLETED, FAILED or CANCELLED; nothing more goes into it."""

    CODE = "RUN_CLOSED"


class Conflict(HubError):
    """``CONFLICT``: e.g. a name already taken, an engine id registered differently."""

    CODE = "CONFLICT"


class LeaseLost(HubError):
    """``LEASE_LOST``: the event's lease is no longer this delivery's; someone else has it."""

    CODE = "LEASE_LOST"


class Unavailable(HubError):
    """``UNAVAILABLE``: the server (its database) cannot answer now; try again."""

    CODE = "UNAVAILABLE"

    @property
    def retryable(self) -> bool:
        return True


class HubConnectionError(Unavailable):
    """The server could not be reached, or the connection dropped (no GraphQL answer).

    ``code`` is ``"CONNECTION"``; ``close_code`` is the websocket close code when
    the server closed the socket, else None.
    """

    CODE = "CONNECTION"

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class Unauthenticated(HubError):
    """``UNAUTHENTICATED``: the server has API keys and the token is missing, wrong or revoked."""

    CODE = "UNAUTHENTICATED"


class Forbidden(HubError):
    """``FORBIDDEN``: the API key's role does not allow the operation."""

    CODE = "FORBIDDEN"


class LimitExceeded(HubError):
    """``LIMIT_EXCEEDED``: a configured limit (payload size, batch, ``first``, ...)."""

    CODE = "LIMIT_EXCEEDED"


class InternalError(HubError):
    """``INTERNAL``: the server failed; its log has the details."""

    CODE = "INTERNAL"


_BY_CODE: dict[str, type[HubError]] = {
    cls.CODE: cls
    for cls in (
        NotFound,
        BadUserInput,
        PayloadSchemaViolation,
        VersionConflict,
        InvalidTransition,
        RunClosed,
        Conflict,
        LeaseLost,
        Unavailable,
        Unauthenticated,
        Forbidden,
        LimitExceeded,
        InternalError,
    )
    if cls.CODE is not None
}


def error_from_graphql(errors: Sequence[Mapping[str, Any]]) -> HubError:
    """The :class:`HubError` (subclass) for the GraphQL ``errors`` of one answer.

    The first error decides the class, code, field and message; all are kept
    in ``errors``.
    """
    if not errors:
        return HubError("the server answered with an empty error list", errors=errors)
    first = errors[0]
    extensions = first.get("extensions")
    extensions = extensions if isinstance(extensions, Mapping) else {}
    code = extensions.get("code")
    code = code if isinstance(code, str) else None
    field = extensions.get("field")
    field = field if isinstance(field, str) else None
    message = first.get("message")
    message = message if isinstance(message, str) else "unknown error"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error(s))"
    path = first.get("path")
    path = [p for p in path if isinstance(p, (str, int))] if isinstance(path, list) else None
    cls = _BY_CODE.get(code or "", HubError)
    return cls(message, code=code, field=field, path=path, errors=errors)
