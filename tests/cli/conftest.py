from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from helpers.paths import PLUGIN_DIR
from helpers.services import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("server")
    env = {
        "AUTOGLM_TEST_RECORD": str(root / "record.log"),
        "AUTOGLM_PLUGINS__DIRS": json.dumps([str(PLUGIN_DIR)]),
        "AUTOGLM_API__API_KEYS": json.dumps(["sekret"]),
    }
    srv = ServerProcess(root / "data", env=env).start()
    yield srv
    srv.stop()
