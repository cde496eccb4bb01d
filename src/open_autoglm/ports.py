"""Find a TCP port to listen on: a rank's rendezvous, or a server a test or benchmark starts."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (``""``: free on every interface).

    The port is released before returning, so another process may take it first; callers
    bind it at once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
