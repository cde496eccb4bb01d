"""``autoglm keys``: create, list and revoke API keys.

Against a running server (``--url``, an admin ``--api-key``), or with ``--offline`` straight
against the data directory and database of the settings (``--config``, ``--data-dir``, the
``AUTOGLM_*`` environment): that is how an operator creates the first admin key before any
key exists. A server sharing that database picks the keys up on its next lease renewal.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.table import Table

from open_autoglm.cli.common import (
    JsonOpt,
    KeyOpt,
    UrlOpt,
    console,
    fail,
    fail_unreachable,
    print_json,
)
from open_autoglm.errors import AutoGLMError
from open_autoglm.spec.principal import Scope

__all__ = ["app"]

T = TypeVar("T")

app = typer.Typer(help="Manage API keys (admin).", no_args_is_help=True)

OfflineOpt = Annotated[
    bool,
    typer.Option(
        "--offline", help="write to the database of the settings directly (no server needed)"
    ),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML config file (offline)")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="data directory (offline)")]


class _Offline:
    """The three key operations on the settings' database, shaped like the SDK's."""

    def __init__(self, config: Path | None, data_dir: Path | None) -> None:
        from open_autoglm.config import load_settings
        from open_autoglm.storage.api_keys import ApiKeyRepo
        from open_autoglm.storage.engine import create_storage_engine, migrate

        overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
        settings = load_settings(config, **overrides)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = create_storage_engine(settings.storage_url())
        migrate(self.engine)
        self.repo = ApiKeyRepo(self.engine)

    def create_key(self, owner: str, scopes: list[str], *, name: str = "") -> dict[str, Any]:
        record, key = self.repo.create(owner, scopes, name)
        return {**record, "key": key}

    def list_keys(self, *, include_revoked: bool = False) -> list[dict[str, Any]]:
        return self.repo.list(include_revoked=include_revoked)

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self.repo.revoke(key_id)

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def _keys(
    url: str | None, api_key: str | None, offline: bool, config: Path | None, data_dir: Path | None
) -> Iterator[Any]:
    if offline:
        store = _Offline(config, data_dir)
        try:
            yield store
        finally:
            store.close()
        return
    from open_autoglm.client import Client

    with Client(url, api_key=api_key) as client:
        yield client


def _run(target: Any, fn: Callable[[Any], T]) -> T:
    """``fn`` on the server's client or the offline store; errors print as every verb's do."""
    try:
        return fn(target)
    except AutoGLMError as exc:
        fail(exc)
    except httpx.TransportError as exc:
        fail_unreachable(str(getattr(target, "base_url", "")), exc)


@app.command("create")
def create(
    owner: Annotated[str, typer.Argument(help="whose work the key sees and creates")],
    scope: Annotated[
        list[Scope] | None,
        typer.Option("--scope", "-s", help="repeat for several; default: read and submit"),
    ] = None,
    name: Annotated[str, typer.Option(help="a label for the key")] = "",
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    offline: OfflineOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a key and print it: this is the only time it is shown."""
    scopes = [s.value for s in scope] if scope else [Scope.READ.value, Scope.SUBMIT.value]
    with _keys(url, api_key, offline, config, data_dir) as target:
        created = _run(target, lambda t: t.create_key(owner, scopes, name=name))
    if json_out:
        print_json(created)
        return
    console.print(
        f"created key [bold]{created['id']}[/bold] for {created['owner']} "
        f"({', '.join(created['scopes'])}); store it now, it is not shown again:"
    )
    sys.stdout.write(created["key"] + "\n")


@app.command("list")
def list_keys(
    include_revoked: Annotated[bool, typer.Option("--all", help="revoked keys too")] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    offline: OfflineOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Keys with owner, scopes and dates (never the keys themselves)."""
    with _keys(url, api_key, offline, config, data_dir) as target:
        keys = _run(target, lambda t: t.list_keys(include_revoked=include_revoked))
    if json_out:
        print_json(keys)
        return
    table = Table("id", "owner", "scopes", "name", "revoked")
    for k in keys:
        table.add_row(
            k["id"], k["owner"], ", ".join(k["scopes"]), k["name"], "yes" if k["revoked_at"] else ""
        )
    console.print(table)


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (from keys list)")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    offline: OfflineOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Revoke a key: the server refuses it from then on."""
    with _keys(url, api_key, offline, config, data_dir) as target:
        record = _run(target, lambda t: t.revoke_key(key_id))
    if json_out:
        print_json(record)
        return
    console.print(f"revoked key {record['id']} of {record['owner']}")
