"""Fixtures of the security tests: the default server, and a loopback listener."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from helpers.security import Listener, app_client


@pytest.fixture
def listener() -> Iterator[Listener]:
    srv = Listener()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The default configuration: no allowlist, no secrets, default limits."""
    with app_client(tmp_path_factory.mktemp("security") / "data") as client:
        yield client
