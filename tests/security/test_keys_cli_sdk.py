"""Key management end to end: the first admin key made offline, then the CLI, both SDK
clients and the docs' worked example against a real server process."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers.services import ServerProcess
from open_autoglm import errors
from open_autoglm.cli.main import app as cli
from open_autoglm.client import AsyncClient, Client

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


class Ran:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def autoglm(*args: str, env: dict[str, str] | None = None) -> Ran:
    """The ``autoglm`` command, run in this process (a subprocess costs seconds of imports)."""
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "200", **(env or {})})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    data = tmp_path_factory.mktemp("keys") / "data"
    made = autoglm(
        "keys", "create", "ops", "--scope", "admin", "--offline", "--data-dir", str(data)
    )
    assert made.returncode == 0, made.stderr
    admin_key = made.stdout.strip().splitlines()[-1]
    assert admin_key.startswith("agk_")
    srv = ServerProcess(data).start()
    try:
        yield srv, admin_key
    finally:
        srv.stop()


def test_offline_admin_key_turns_auth_on_and_works(served: tuple[ServerProcess, str]) -> None:
    srv, admin_key = served
    with Client(srv.url) as anonymous, pytest.raises(errors.AuthenticationError):
        anonymous.list_keys()
    with Client(srv.url, api_key=admin_key) as admin:
        assert next(k["owner"] for k in admin.list_keys()) == "ops"


def test_cli_lists_creates_and_revokes_through_the_server(
    served: tuple[ServerProcess, str],
) -> None:
    srv, admin_key = served
    env = {"AUTOGLM_URL": srv.url, "AUTOGLM_API_KEY": admin_key}
    made = autoglm("keys", "create", "carol", "-s", "read", "--json", env=env)
    assert made.returncode == 0, made.stderr
    carol = json.loads(made.stdout)
    assert carol["scopes"] == ["read"] and carol["key"].startswith("agk_")
    listed = autoglm("keys", "list", env=env)
    assert listed.returncode == 0 and "carol" in listed.stdout and carol["key"] not in listed.stdout
    # A read key is no admin: the CLI shows the server's refusal and exits 1.
    refused = autoglm("keys", "list", env={**env, "AUTOGLM_API_KEY": carol["key"]})
    assert refused.returncode == 1 and "forbidden" in refused.stderr
    gone = autoglm("keys", "revoke", carol["id"], env=env)
    assert gone.returncode == 0 and carol["id"] in gone.stdout
    with Client(srv.url, api_key=carol["key"]) as c:
        c.health()  # open to everyone
        with pytest.raises(errors.AuthenticationError):
            c.task_types()
    unknown = autoglm("keys", "revoke", "0123456789abcdef", env=env)
    assert unknown.returncode == 1 and "not_found" in unknown.stderr


def test_async_client_manages_keys(served: tuple[ServerProcess, str]) -> None:
    srv, admin_key = served

    async def go() -> dict[str, Any]:
        async with AsyncClient(srv.url, api_key=admin_key) as admin:
            made = await admin.create_key("dave", ["submit"], name="ci")
            listed = await admin.list_keys()
            revoked = await admin.revoke_key(made["id"])
            after = await admin.list_keys(include_revoked=True)
        return {"made": made, "listed": listed, "revoked": revoked, "after": after}

    out = asyncio.run(go())
    assert out["made"]["name"] == "ci" and out["made"]["scopes"] == ["submit"]
    assert out["made"]["id"] in {k["id"] for k in out["listed"]}
    assert out["revoked"]["revoked_at"] is not None
    assert any(k["id"] == out["made"]["id"] and k["revoked_at"] for k in out["after"])


def test_docs_example_runs(served: tuple[ServerProcess, str]) -> None:
    srv, admin_key = served
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert blocks, "docs/security.md has no Python example"
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), {"url": srv.url, "admin_key": admin_key})


def test_revoking_a_key_ends_its_open_event_streams(served: tuple[ServerProcess, str]) -> None:
    """A revoked key reads no further: its open SSE stream ends with a revoked frame at once,
    not when the task it follows ends (a sleep of a minute here)."""
    import threading

    import httpx

    srv, admin_key = served
    with Client(srv.url, api_key=admin_key) as admin:
        made = admin.create_key("carol", ["read", "submit"])
    carol = {"Authorization": f"Bearer {made['key']}", "Accept": "text/event-stream"}
    with Client(srv.url, api_key=made["key"]) as c:
        task = c.submit(task_type="sleep", params={"seconds": 60})
    frames: list[str] = []
    revoker: threading.Thread | None = None
    with httpx.stream(
        "GET", f"{srv.url}/v1/tasks/{task['id']}/events", headers=carol, timeout=30
    ) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            frames.append(line)
            if revoker is None and line.startswith("event:"):

                def revoke() -> None:
                    with Client(srv.url, api_key=admin_key) as admin:
                        admin.revoke_key(made["id"])

                revoker = threading.Thread(target=revoke)
                revoker.start()
    assert revoker is not None
    revoker.join()
    i = frames.index('data: {"reason": "api key revoked"}')
    assert frames[i - 1] == "event: end" and not any(f.strip() for f in frames[i + 1 :])
    with Client(srv.url, api_key=admin_key) as admin:
        assert admin.get(task["id"])["status"] == "running"  # the stream ended, not the task
        admin.cancel(task["id"])
