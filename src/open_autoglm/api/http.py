"""uvicorn's httptools protocol, with each response's writes sent as one.

uvicorn writes a response's status line and headers on ``http.response.start`` and its body
on ``http.response.body``: two ``send`` system calls and two TCP segments per response, and
on loopback the kernel delivers each segment inside the sender's system call, so the second
write is not cheap. :class:`CoalescingHttpToolsProtocol` hands uvicorn a transport that
collects what is written during one event-loop iteration and sends it with one ``write`` at
the end of it. A response whose head and body are sent together (every ``JSONResponse``)
leaves in one segment; a streamed body's chunks still leave as they come, one loop
iteration later at most.

``autoglm serve`` runs uvicorn with this protocol (``http=``); every server test goes
through it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol", "CoalescingTransport"]


class CoalescingTransport:
    """Wraps a transport: writes made in one loop iteration go out as one ``write``.

    Everything but ``write``, ``writelines``, ``write_eof``, ``close`` and ``abort`` is the
    wrapped transport's (flow control, extra info, ``is_closing``...). Pending bytes are sent
    before an EOF or a close, and dropped on ``abort`` as the transport's own buffer is.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Send what is pending now (called at the end of the iteration that wrote it)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)  # type: ignore[arg-type]
