from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from helpers.paths import PLUGIN_DIR
from helpers.settings import make_settings
from open_autoglm.api.app import create_app
from open_autoglm.runtime import Runtime


@pytest.fixture
def api(tmp_path, monkeypatch) -> Iterator[TestClient]:
    monkeypatch.setenv("AUTOGLM_TEST_RECORD", str(tmp_path / "record.log"))
    settings = make_settings(tmp_path / "data", plugins={"dirs": [PLUGIN_DIR]})
    app = create_app(runtime=Runtime(settings))
    with TestClient(app) as client:
        yield client
