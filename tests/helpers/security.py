"""What the security tests attack with: a loopback HTTP listener and in-process servers."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from helpers.settings import make_settings
from open_autoglm.api.app import create_app
from open_autoglm.runtime import Runtime

__all__ = ["Listener", "app_client"]


class Listener:
    """An HTTP server on 127.0.0.1 that records every request and answers ``status``/``body``.

    What an attack must not do is reach it: ``requests`` stays empty.
    """

    def __init__(
        self, status: int = 200, body: bytes = b"{}", headers: dict[str, str] | None = None
    ) -> None:
        self.status, self.body, self.headers = status, body, headers or {}
        self.requests: list[dict[str, Any]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                listener.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length),
                    }
                )
                self.send_response(listener.status)
                for k, v in listener.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(listener.body)))
                self.end_headers()
                self.wfile.write(listener.body)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def app_client(data_dir: Path, **overrides: Any) -> TestClient:
    """A TestClient over a fresh runtime (enter it with ``with``), with the default model
    roots (the data dir and the bundled models), not the temp dir other tests add."""
    models = dict(overrides.pop("models", None) or {})
    models.setdefault("roots", [])
    return TestClient(
        create_app(runtime=Runtime(make_settings(data_dir, models=models, **overrides)))
    )
