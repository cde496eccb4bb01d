"""Per-client rate limits at the API: in memory, per API key, and shared through Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from helpers.services import autoglm_server, redis_server
from helpers.settings import make_settings
from open_autoglm import errors
from open_autoglm.api.app import create_app
from open_autoglm.client import Client
from open_autoglm.runtime import Runtime


def _app(tmp_path: Path, **api: object) -> TestClient:
    settings = make_settings(tmp_path / "data", api=api)
    return TestClient(create_app(runtime=Runtime(settings)))


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[TestClient]:
    # 0.01/s: no token comes back during the test, so the counts below are exact.
    with _app(tmp_path, rate_limit={"per_s": 0.01, "burst": 3}) as client:
        yield client


def test_a_client_over_its_burst_gets_429_with_retry_after(limited: TestClient) -> None:
    assert [limited.get("/v1/task-types").status_code for _ in range(3)] == [200] * 3
    resp = limited.get("/v1/task-types")
    assert resp.status_code == 429
    err = resp.json()["error"]
    assert err["code"] == "rate_limited" and err["details"][0]["loc"] == ["client"]
    assert "0.01 requests/s, burst 3" in err["message"]
    assert int(resp.headers["retry-after"]) >= 99  # one token at 0.01/s
    # Health checks and metrics are never limited, and the refusals are counted.
    assert all(limited.get("/healthz").status_code == 200 for _ in range(5))
    metrics = limited.get("/metrics").text
    assert "autoglm_rate_limited_total 1.0" in metrics


def test_limits_are_per_api_key_and_bad_keys_cost_nothing(tmp_path: Path) -> None:
    api = {"api_keys": ["key-a", "key-b"], "rate_limit": {"per_s": 0.01, "burst": 2}}
    with _app(tmp_path, **api) as client:
        a, b = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}
        assert [client.get("/v1/task-types", headers=a).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
        for _ in range(5):  # refused before the limit: no token spent, no 429
            assert client.get("/v1/task-types", headers={"X-API-Key": "nope"}).status_code == 401
        assert client.get("/v1/task-types", headers=b).status_code == 200


def test_off_by_default(tmp_path: Path) -> None:
    with _app(tmp_path) as client:
        assert all(client.get("/v1/task-types").status_code == 200 for _ in range(50))
        assert "autoglm_rate_limited_total 0.0" in client.get("/metrics").text


def test_bad_rate_limit_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="per_s"):
        make_settings(tmp_path, api={"rate_limit": {"per_s": -1}})


def test_two_servers_share_one_limit_through_redis(tmp_path: Path) -> None:
    with redis_server() as url:
        env = {
            "AUTOGLM_API__RATE_LIMIT__PER_S": "0.01",
            "AUTOGLM_API__RATE_LIMIT__BURST": "4",
            "AUTOGLM_API__RATE_LIMIT__REDIS_URL": url,
        }
        with (
            autoglm_server(tmp_path / "one", env=env) as one,
            autoglm_server(tmp_path / "two", env=env) as two,
        ):
            codes = [httpx.get(s.url + "/v1/task-types").status_code for s in (one, two) * 3]
            assert codes == [200, 200, 200, 200, 429, 429]  # 4 in all, not 4 each
            # The SDK turns the 429 into a typed error carrying Retry-After.
            with Client(two.url) as sdk, pytest.raises(errors.RateLimitedError) as caught:
                sdk.task_types()
            assert caught.value.retry_after >= 99
            metrics = httpx.get(one.url + "/metrics").text
            assert "autoglm_rate_limited_total 1.0" in metrics
            assert "autoglm_rate_limit_fallbacks_total 0.0" in metrics
