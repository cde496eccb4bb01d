"""What every ``autoglm`` command shares: the server options, the client, error printing.

One place, so an option reads the same everywhere and every failure prints the same way: a
server error as one line (and the details it lists that the line does not already say), an
unreachable server as one line that says how to point the CLI elsewhere, exit code 1.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import httpx
import orjson
import typer
from rich.console import Console

from open_autoglm import errors

__all__ = [
    "JsonOpt",
    "KeyOpt",
    "UrlOpt",
    "call",
    "client",
    "console",
    "err_console",
    "fail",
    "fail_unreachable",
    "human_time",
    "print_json",
    "unreachable_message",
]

T = TypeVar("T")

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="AUTOGLM_URL", help="server URL [default: http://127.0.0.1:8000]"),
]
KeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="AUTOGLM_API_KEY", help="API key")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]

console = Console()
err_console = Console(stderr=True, highlight=False)


def client(url: str | None, key: str | None) -> Any:
    """The SDK client for ``url`` (else ``AUTOGLM_URL``, else the local default)."""
    from open_autoglm.client import Client

    return Client(url, api_key=key)


def call(url: str | None, key: str | None, fn: Callable[[Any], T]) -> T:
    """Run ``fn(client)``; a server error or an unreachable server prints one line, exits 1."""
    with client(url, key) as c:
        try:
            return fn(c)
        except errors.AutoGLMError as exc:
            fail(exc)
        except httpx.TransportError as exc:
            fail_unreachable(c.base_url, exc)


def fail(exc: errors.AutoGLMError, *, as_json: bool = False) -> NoReturn:
    """Print an error: its message, then the details the message does not already say; with
    ``as_json``, the error object (code, message, details) on stdout for a script to read."""
    if as_json:
        print_json(exc.to_dict())
        raise typer.Exit(1)
    err_console.print(f"[red]error[/red] ({exc.code}): {exc.message}", soft_wrap=True)
    for d in exc.details:
        loc = ".".join(str(p) for p in d.get("loc", [])) or "body"
        line = f"{loc}: {d.get('msg')}"
        if line not in exc.message:
            err_console.print(f"  - {line}", soft_wrap=True)
    raise typer.Exit(1)


def unreachable_message(url: str, exc: BaseException | None = None) -> str:
    what = "no answer from" if isinstance(exc, httpx.TimeoutException) else "cannot reach"
    return f"{what} {url}: is the server running? set AUTOGLM_URL or --url"


def fail_unreachable(url: str, exc: BaseException | None = None) -> NoReturn:
    """One line for a server that does not answer, with the fix."""
    err_console.print(f"[red]error[/red]: {unreachable_message(url, exc)}", soft_wrap=True)
    raise typer.Exit(1)


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def human_time(ts: float | None, *, now: float | None = None) -> str:
    """``2026-01-02 10:00:05 (3 min ago)`` in local time, or ``-`` when unset."""
    if ts is None:
        return "-"
    now = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    ago = now - ts
    if ago < 0:
        return stamp
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if ago >= size:
            return f"{stamp} ({ago / size:.0f} {unit} ago)"
    return f"{stamp} ({ago:.0f} s ago)"
