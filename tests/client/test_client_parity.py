"""``Client`` and ``AsyncClient`` offer the same methods; uploads carry the file's type."""

from __future__ import annotations

import inspect

from open_autoglm.client import AsyncClient, Client
from open_autoglm.client.base import media_type_of

# Names that differ by convention only (httpx: close / aclose).
RENAMED = {"close": "aclose"}


def _public(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}


def test_sync_and_async_clients_expose_the_same_methods() -> None:
    sync = {RENAMED.get(n, n) for n in _public(Client)}
    assert sync == _public(AsyncClient), (
        f"only in Client: {sorted(sync - _public(AsyncClient))}; "
        f"only in AsyncClient: {sorted(_public(AsyncClient) - sync)}"
    )
    for name in _public(AsyncClient):
        fn = getattr(AsyncClient, name)
        if name in ("list", "list_runs", "stream_events", "stream_run_events"):
            continue  # iterators: async generators on one side, generators on the other
        assert inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn), name


def test_upload_type_is_guessed_from_the_name() -> None:
    assert media_type_of("config.json") == "application/json"
    assert media_type_of("weights.bin") == "application/octet-stream"
    assert media_type_of("notes.txt", "text/markdown") == "text/markdown"
