"""The handler's HTTP protocol: uvicorn's httptools protocol, plus a header deadline and a connection count.

uvicorn bounds neither how long a client may take to send a request's headers (a connection that sends
nothing, or half a request line, is kept forever) nor how many connections are open. This subclass arms a
timer when a connection opens and when each request's first byte arrives, and disarms it when the headers
are complete; a request whose headers are late is answered 408 (`request_timeout`) and closed, a
connection that sent nothing is closed. uvicorn's httptools parser keeps whatever headers arrive, without
a limit: the bytes that come while a request's headers are incomplete are counted, and past
`max_header_bytes` the request is answered 431 (`headers_too_large`) and closed. It also counts open
connections in a `ConnectionCount` the app reads, so that requests on connections beyond `--max-connections`
are answered with a JSON 503, and connections far beyond it are closed at once. It overrides only the asyncio
`Protocol` methods and the httptools parser callbacks, and calls uvicorn's own for everything else.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from harness.handler.admission import ConnectionCount

# Beyond this many times the connection cap a new connection is closed without an answer: reading its
# request to answer 503 would cost what the cap is there to save.
HARD_CAP_FACTOR = 2


def _raw_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def protocol_class(
    connections: ConnectionCount, header_timeout_s: float, max_header_bytes: int = 64 * 1024
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a header deadline of `header_timeout_s` and a header size limit of
    `max_header_bytes`, counting `connections`."""
    late_headers = _raw_response(
        408,
        "Request Timeout",
        "request_timeout",
        f"the request's headers did not arrive within {header_timeout_s:g} s",
    )
    large_headers = _raw_response(
        431,
        "Request Header Fields Too Large",
        "headers_too_large",
        f"the request's line and headers take more than {max_header_bytes} bytes",
    )

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.header_timer: asyncio.TimerHandle | None = None
            self.in_headers = False
            # Between a request's headers and its end its bytes are body, which the app bounds itself.
            self.in_body = False
            self.header_bytes = 0
            self.counted = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            super().connection_made(transport)  # type: ignore[arg-type]
            connections.open += 1
            self.counted = True
            if connections.open > connections.limit * HARD_CAP_FACTOR:
                transport.close()
                return
            self.arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.counted:
                connections.open -= 1
                self.counted = False
            self.disarm_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self.in_body:
                self.header_bytes += len(data)
            super().data_received(data)
            # Bytes that completed the headers were counted back to zero by on_headers_complete: what is
            # counted now is what arrived while headers were still incomplete (one read beyond the limit at most).
            if not self.in_body and self.header_bytes > max_header_bytes and not self.transport.is_closing():
                self.disarm_header_timer()
                self.transport.write(large_headers)
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.in_headers = True
            if self.header_timer is None:
                self.arm_header_timer()

        def on_headers_complete(self) -> None:
            self.in_headers = False
            self.in_body = True
            self.header_bytes = 0
            self.disarm_header_timer()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self.in_body = False
            super().on_message_complete()

        def arm_header_timer(self) -> None:
            self.disarm_header_timer()
            self.header_timer = self.loop.call_later(header_timeout_s, self.headers_late)

        def disarm_header_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def headers_late(self) -> None:
            self.header_timer = None
            if self.transport.is_closing():
                return
            if self.in_headers:
                self.transport.write(late_headers)
            self.transport.close()

    return GuardedHttpToolsProtocol
