"""A free port is one a listener can bind at once."""

from __future__ import annotations

import socket

import pytest

from open_autoglm.ports import free_port


@pytest.mark.parametrize("host", ["127.0.0.1", ""])
def test_free_port_is_bindable(host: str) -> None:
    port = free_port(host)
    with socket.socket() as s:
        s.bind((host, port))
