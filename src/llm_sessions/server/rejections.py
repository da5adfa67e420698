"""Refusals: `Reject`, raised anywhere in a handler, and the response it becomes, in
the API's own error shape (OpenAI's, or Anthropic's with ``x-should-retry``)."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from ..protocols import messages
from .wire import Wire

__all__ = ["Reject", "error_body", "rejection"]


class Reject(Exception):
    """An error response, raised anywhere in a handler: its status, message, OpenAI error
    type, and any more fields of the error object (``code``, ``param``...)."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.extra = extra


def error_body(message: str, kind: str, **extra: Any) -> dict[str, Any]:
    """An error in OpenAI's shape."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None, **extra}}


def rejection(
    reject: Reject, wire: Wire | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """`reject` as a response in the wire's error shape (OpenAI's without a wire)."""
    if wire is None or not wire.anthropic_errors:
        body = error_body(str(reject), reject.kind, **reject.extra)
        return JSONResponse(body, reject.status, headers=headers)
    shaped = messages.error_body(reject.status, str(reject))
    code = reject.extra.get("code")
    if code:
        shaped["error"]["code"] = code
    retry = "true" if reject.status >= 500 else "false"  # the Anthropic SDKs honour it
    return JSONResponse(shaped, reject.status, headers={**(headers or {}), "x-should-retry": retry})
