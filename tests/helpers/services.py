"""Start real PostgreSQL, Redis and Open-AutoGLM servers on 127.0.0.1 for tests and benchmarks."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from open_autoglm.ports import free_port

__all__ = [
    "ServerProcess",
    "autoglm_server",
    "postgres_server",
    "ray_head",
    "redis_server",
]


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for path in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return path
    raise RuntimeError(f"PostgreSQL binary {name!r} not found: run scripts/ensure-services.sh")


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:  # initdb and pg_ctl refuse to run as root
        return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(_q(c) for c in cmd)]
    return cmd


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields a SQLAlchemy URL (psycopg 3)."""
    root = Path(tempfile.mkdtemp(prefix="autoglm-pg-"))
    data, log = root / "data", root / "pg.log"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres(
            [_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]
        ),
        check=True,
        capture_output=True,
    )
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off -c max_connections=200"
    subprocess.run(
        _as_postgres(
            [_pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        yield url
    finally:
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway Redis on loopback; yields ``redis://127.0.0.1:PORT/0``."""
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError("redis-server not found: run scripts/ensure-services.sh")
    root = Path(tempfile.mkdtemp(prefix="autoglm-redis-"))
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(root),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(root, ignore_errors=True)


class ServerProcess:
    """An Open-AutoGLM server as a real process (``autoglm serve``)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Tests build tiny models in temp dirs: a model root there, as an operator would set one.
        roots = {"AUTOGLM_MODELS__ROOTS": json.dumps([tempfile.gettempdir()])}
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", **roots, **(env or {})}
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.data_dir / f"server-{self.port}.log"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "open_autoglm.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_logf", None):
            self._logf.close()


@contextlib.contextmanager
def autoglm_server(data_dir: Path, **kwargs: object) -> Iterator[ServerProcess]:
    server = ServerProcess(data_dir, **kwargs).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def ray_head(cpus: int = 2) -> Iterator[str]:
    """A real Ray cluster head (``ray start --head --block``) in its own temp dir and process
    group; yields the address to join (``127.0.0.1:PORT``) and kills the whole group after.

    Joining needs ``RAY_AUTH_MODE=token`` in the joiner's environment: Ray 2.5x heads require
    the token that ``ray start`` keeps in ``~/.ray/auth_token``.
    """
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="ray-head-")
    log = open(Path(tmp) / "head.log", "wb")
    proc = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while b"Ray runtime started" not in (Path(tmp) / "head.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "ray head did not start:\n" + (Path(tmp) / "head.log").read_text()[-3000:]
                )
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
