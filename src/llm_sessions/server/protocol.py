"""The HTTP/1.1 protocol the gateway runs under uvicorn: httptools, with the request head
(request line and headers) bounded before the parser reads it, and the console's live
streams ended when the server shuts down.

httptools sets no limit of its own, and its cost grows faster than the head: one 64 MB
header took seconds of CPU before authentication. A head past `MAX_HEAD_BYTES` is
answered ``431 Request Header Fields Too Large`` and the connection closed, as soon as
that many bytes have arrived.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .console import end_streams

__all__ = ["MAX_HEAD_BYTES", "BoundedHttpToolsProtocol"]

#: The largest request head (request line and headers) the gateway reads. Agents send a
#: few kB; browsers and proxies cap theirs at 8-64 kB.
MAX_HEAD_BYTES = 64 * 1024

_LINGER_S = 2.0  # how long a refused connection drops what still arrives, then closes
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, counting the bytes each request head has taken: from
    the request's first byte to the end of its headers. The count is checked after each
    chunk is parsed, so a head that ends in a chunk (with its body after it) is never
    refused, and a head past the bound costs at most one chunk more."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head: int | None = None  # bytes of the head being read; None between heads
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the rest of what was refused: dropped unread
        super().data_received(data)
        if self._head is None or self.transport.is_closing():
            return
        self._head += len(data)
        if self._head > MAX_HEAD_BYTES:
            self._refuse()

    def _refuse(self) -> None:
        """Answer 431 and end the connection. The client may still be sending: the answer
        is followed by a half-close, and what arrives meanwhile is dropped for a moment
        before the connection closes (closing with unread data would reset it, and the
        client could lose the answer)."""
        self._head, self._refused = None, True
        message = f"the request head is over {MAX_HEAD_BYTES} bytes".encode()
        self.transport.write(_TOO_LARGE % (len(message), message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_LINGER_S, self.transport.close)

    def shutdown(self) -> None:
        """A graceful shutdown: the console's streams end first (they never would by
        themselves), then each connection finishes what it is sending, as uvicorn's."""
        end_streams()
        super().shutdown()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head = 0

    def on_headers_complete(self) -> None:
        self._head = None
        super().on_headers_complete()
