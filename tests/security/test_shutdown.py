"""SIGTERM under load: the server stops accepting, drains for its grace period, and exits;
what it could not finish is handed over as after a crash and runs exactly once after a
restart.

Executions are counted through the test plugin's ``record`` task type (it appends its task
id to a file when it finishes); ``gate`` holds two of them running past the grace period.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import re
import signal
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from helpers.paths import PLUGIN_DIR
from helpers.services import ServerProcess

GRACE_S = 1.0
TERMINAL = {"succeeded", "failed", "cancelled"}


def _terminal_events(db_url: str) -> collections.Counter[str]:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT task_id, data FROM task_events WHERE kind = 'status'")
        ).all()
    engine.dispose()
    counts: collections.Counter[str] = collections.Counter()
    for task_id, data in rows:
        if json.loads(data)["status"] in TERMINAL:
            counts[task_id] += 1
    return counts


def test_sigterm_drains_within_grace_and_hands_over_the_rest(tmp_path: Path) -> None:
    record, gate, data = tmp_path / "record.log", tmp_path / "gate", tmp_path / "data"
    env = {
        "AUTOGLM_TEST_RECORD": str(record),
        "AUTOGLM_PLUGINS__DIRS": json.dumps([str(PLUGIN_DIR)]),
        "AUTOGLM_EXECUTOR__CPU": "4",
        "AUTOGLM_API__LIFECYCLE__SHUTDOWN_GRACE_S": str(GRACE_S),
    }
    server = ServerProcess(data, env=env).start()
    accepted: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as client:

        def submit(params: dict) -> str:
            resp = client.post("/v1/tasks", json={"task_type": "record", "params": params})
            assert resp.status_code == 202, resp.text
            return str(resp.json()["id"])

        def running() -> int:
            return int(client.get("/readyz").json()["scheduler"]["running"])

        def wait(predicate) -> None:  # type: ignore[no-untyped-def]
            deadline = time.monotonic() + 60
            while not predicate():
                assert time.monotonic() < deadline, "condition not reached"
                time.sleep(0.05)

        quick = [submit({"seconds": 0.02}) for _ in range(10)]
        wait(lambda: record.exists() and len(record.read_text().split()) == 10)
        gated = [submit({"gate": str(gate)}) for _ in range(2)]  # run past the grace period
        # A request in flight holds the third slot and would sleep for a day.
        pool = concurrent.futures.ThreadPoolExecutor(1)
        in_flight = pool.submit(
            httpx.post,
            server.url + "/v1/infer",
            json={"task_type": "sleep", "params": {"seconds": 86_400}},
            timeout=60,
        )
        wait(lambda: running() == 3)
        drained = submit({"seconds": GRACE_S / 2})  # finishes within the grace period
        wait(lambda: running() == 4)
        queued = [submit({"seconds": 0.02}) for _ in range(20)]  # no slot left: they wait
        accepted = [*quick, *gated, drained, *queued]

    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    refused = False
    try:  # it stops accepting at once
        httpx.get(server.url + "/healthz", timeout=1)
    except httpx.TransportError:
        refused = True
    # It exits although two gates never open and a request sleeps for a day: waiting for
    # them would not end within this bound.
    server.proc.wait(60)
    server.stop()
    assert refused, "the server still accepted connections while draining"
    # It drained for its own grace period, then handed over what still ran.
    log = server.log.read_text()
    assert f"draining for {GRACE_S:.1f} s" in log, log[-3000:]
    over = re.search(r"grace period over: (\d+) running tasks handed over unfinished", log)
    assert over and int(over.group(1)) >= 2, log[-3000:]  # the gated two, at least
    # The request in flight was answered or cut off at the end of the grace period.
    try:
        in_flight.result(10)
    except httpx.TransportError:
        pass
    pool.shutdown()
    ran_before = collections.Counter(record.read_text().split())
    assert ran_before[drained] == 1, "the task that could finish in the grace period did not"
    assert not any(ran_before[t] for t in gated), "a gated task finished before its gate opened"
    assert not any(ran_before[t] for t in queued), "a queued task started while draining"

    gate.touch()
    server = ServerProcess(data, env=env, port=server.port).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            final: dict[str, dict] = {}
            deadline = time.monotonic() + 60
            while len(final) < len(accepted):
                assert time.monotonic() < deadline, f"{len(final)}/{len(accepted)} terminal"
                for tid in accepted:
                    if (
                        tid not in final
                        and (t := client.get(f"/v1/tasks/{tid}").json())["status"] in TERMINAL
                    ):
                        final[tid] = t
                time.sleep(0.05)
    finally:
        server.stop()
    assert all(t["status"] == "succeeded" for t in final.values())
    runs = collections.Counter(record.read_text().split())
    assert all(runs[t] == 1 for t in accepted), {t: runs[t] for t in accepted if runs[t] != 1}
    terminal = _terminal_events(f"sqlite:///{data / 'autoglm.db'}")
    assert all(terminal[t] == 1 for t in accepted), "a job reached a terminal state twice"
