"""pid_alive: what the lease registry and the actor replicas ask of a process id."""

from __future__ import annotations

import os
import subprocess
import time

from open_autoglm.storage.replicas import pid_alive


def test_a_running_process_is_alive_an_exited_or_reaped_one_is_not() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(child.pid)
        child.kill()
        # Not reaped yet (no wait): a zombie answers signals but is not alive.
        deadline = time.monotonic() + 10
        while pid_alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pid_alive(child.pid)
        assert child.poll() is not None  # it was a zombie until this reaped it
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)
