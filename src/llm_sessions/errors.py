"""The exceptions llm-sessions raises.

::

    Exception
    └── LLMSessionsError              every error of this package
        ├── InvalidSessionId          (also ValueError) a session id header that must be refused
        ├── InvalidRequest            (also ValueError) a chat request the routing flow can't route
        ├── StoreUnavailable          Redis can't be reached, timed out or refused a write
        │   └── SessionBusy           one session's writes contended past ``busy_timeout_ms``
        ├── BudgetExceeded            a request would take its session over its cost cap
        ├── UnknownState              a request continues stored state that is not the caller's
        └── MissingDependency         (also ImportError) an optional extra is not installed

Bad arguments raise the built-in `TypeError` / `ValueError` with a message that names
the argument.
"""

from __future__ import annotations

__all__ = [
    "BudgetExceeded",
    "InvalidRequest",
    "InvalidSessionId",
    "LLMSessionsError",
    "MissingDependency",
    "SessionBusy",
    "StoreUnavailable",
    "UnknownState",
]


class LLMSessionsError(Exception):
    """Base class of every error raised by llm-sessions."""


class InvalidSessionId(LLMSessionsError, ValueError):
    """A session id is present but unusable (too long, or not printable ASCII); `param`
    names where it was (a header's name, or a body field)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidRequest(LLMSessionsError, ValueError):
    """A chat-completions body the routing flow can't route; the message names the field,
    and `param` holds its name when there is one."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class StoreUnavailable(LLMSessionsError):
    """The session store's backend can't be reached, timed out, or refused a write.

    The backend's own exception is chained as ``__cause__``.
    """


class SessionBusy(StoreUnavailable):
    """One session's writes stayed contended (other replicas kept writing it) for longer
    than the store's ``busy_timeout_ms``. Nothing was changed; retrying later is safe."""


class MissingDependency(LLMSessionsError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class BudgetExceeded(LLMSessionsError):
    """The request would take the session's spend over its cap; nothing was changed.

    This is final for the session: retrying the same request gives the same answer.
    """

    def __init__(
        self,
        session_id: str | None,
        spent_micros: int,
        reserved_micros: int,
        cap_micros: int,
        requested_micros: int = 0,
        *,
        source: str | None = None,
        model: str | None = None,
    ) -> None:
        self.session_id = session_id
        self.source = source  # where the session id came from ("header", "derived"...)
        self.model = model  # the model the request would have gone to
        self.spent_micros = spent_micros  # already spent by the session
        self.reserved_micros = reserved_micros  # held by the session's requests in flight
        self.cap_micros = cap_micros
        self.requested_micros = requested_micros  # this request's worst case
        super().__init__(
            f"session budget exceeded: spent {spent_micros} + reserved {reserved_micros} "
            f"+ this request's worst case {requested_micros} micro-USD would pass the cap "
            f"of {cap_micros} micro-USD"
        )


class UnknownState(LLMSessionsError):
    """A request continues stored state (`kind` ``"response"``, ``"conversation"`` or
    ``"item"``, named `ident`) that is not the caller's: another tenant's, or, with
    ``unknown_state="refuse"``, one never served through this store. Nothing was changed
    and nothing should be forwarded: to this caller, that state does not exist."""

    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"no {kind} {ident[:256]!r} for this caller")
