"""Fixtures shared by the whole suite. Real servers only: nothing here is mocked."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Rich fixes a console's width from these when it is built (at import): a terminal's or a
# test worker's size must not change what the CLI tests read.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers importable as `helpers`

from helpers.paths import PLUGIN_DIR
from helpers.services import ServerProcess, postgres_server
from helpers.settings import make_settings
from open_autoglm.config import Settings
from open_autoglm.runtime import Runtime

# Modules whose tests share one local Ray instance: one test worker runs them all.
_RAY_MODULES = ("test_ray_executor.py", "test_ray_actor.py")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``pytest -n N`` (``make test``) a module's tests go to one worker together, so
    its module fixtures (servers, models) start once; the Ray modules go together to one
    worker, so two Ray instances never compete for the machine."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "ray" if module.endswith(_RAY_MODULES) else module

    return ModuleScheduling(config, log)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A real PostgreSQL server for the session (started here, stopped after)."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def pg_db(pg_url: str, request: pytest.FixtureRequest) -> str:
    """A fresh database per test on the session's PostgreSQL server."""
    from helpers.services import create_database

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return create_database(pg_url, name)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    """One real local Ray instance for the session (4 logical CPUs on this 2-core machine, so
    a test's actor replicas and a test's Ray tasks never wait on each other's reservation).

    Runtimes and pools that ``acquire`` it meanwhile share it; it stops after the last test.
    """
    from open_autoglm.config import ExecutorSettings
    from open_autoglm.executors import ray_cluster as rc

    info = rc.acquire(ExecutorSettings(backend="ray", cpu=4, memory_mb=4096))
    yield info
    rc.release()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def make_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Runtime]]:
    """The one runtime factory: ``make_runtime(**setting_overrides)`` starts a runtime on a
    fresh data dir with the test plugins (their record file at ``tmp_path/record.log``);
    every runtime it started stops after the test."""
    monkeypatch.setenv("AUTOGLM_TEST_RECORD", str(tmp_path / "record.log"))
    started: list[Runtime] = []

    def make(**overrides: object) -> Runtime:
        overrides.setdefault("plugins", {"dirs": [PLUGIN_DIR]})
        rt = Runtime(make_settings(tmp_path / f"data{len(started)}", **overrides)).start()
        started.append(rt)
        return rt

    yield make
    for rt in started:
        rt.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real ``autoglm serve`` process with the test plugins and an API key (``sekret``)."""
    root = tmp_path_factory.mktemp("server")
    env = {
        "AUTOGLM_TEST_RECORD": str(root / "record.log"),
        "AUTOGLM_PLUGINS__DIRS": json.dumps([str(PLUGIN_DIR)]),
        "AUTOGLM_API__API_KEYS": json.dumps(["sekret"]),
    }
    srv = ServerProcess(root / "data", env=env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def tiny_sentiment_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT classifier (negative, neutral, positive) fitted to cue words."""
    from helpers.classifiers import train_tiny_sentiment

    return train_tiny_sentiment(tmp_path_factory.mktemp("tiny-sentiment"))
