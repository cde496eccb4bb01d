"""Run the examples written in Markdown pages against a live server.

A fenced block runs as a test when the line just before its fence is the marker::

    <!-- doctest -->
    ```bash
    autoglm submit echo --input hello --wait
    ```

The marker is an HTML comment, so readers never see it. ``<!-- doctest: exit=1 -->`` expects
that exit code instead of 0 (an example that shows an error). Languages: ``bash``/``sh``
(run with ``bash -euo pipefail``) and ``python``. The blocks of one page run in page order,
from the repository root, against one server started for that page, with ``AUTOGLM_URL``
set and the project's ``autoglm`` first on ``PATH``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MARKER", "DocExample", "find_examples", "run_example"]

MARKER = "doctest"
_MARK = re.compile(r"^\s*<!--\s*doctest(?::\s*exit=(\d+))?\s*-->\s*$")
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
LANGUAGES = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}


@dataclass(frozen=True)
class DocExample:
    """One marked block: where it is, its language, its code and the exit code it expects."""

    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    exit_code: int = 0

    @property
    def name(self) -> str:
        return f"{self.page.name}:{self.line}"


def find_examples(page: Path) -> list[DocExample]:
    """The marked blocks of ``page``, in order. A marked block in an unknown language is an
    error, not a block silently left out."""
    lines = page.read_text().splitlines()
    found: list[DocExample] = []
    i = 0
    while i < len(lines):
        mark = _MARK.match(lines[i])
        if mark is None:
            i += 1
            continue
        fence = _FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if fence is None:
            raise ValueError(f"{page}:{i + 1}: a doctest marker must come just before a fence")
        indent, ticks, lang = fence.groups()
        if lang not in LANGUAGES:
            raise ValueError(f"{page}:{i + 2}: doctest block in {lang or 'no'} language")
        body: list[str] = []
        j = i + 2
        while j < len(lines) and not lines[j].strip().startswith(ticks):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"{page}:{i + 2}: unclosed fence")
        exit_code = int(mark.group(1) or 0)
        found.append(DocExample(page, i + 2, LANGUAGES[lang], "\n".join(body) + "\n", exit_code))
        i = j + 1
    return found


def run_example(
    example: DocExample, url: str, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run one block against the server at ``url``; raises AssertionError on a wrong exit."""
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "AUTOGLM_URL": url,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "NO_COLOR": "1",
        "COLUMNS": "120",
    }
    if example.language == "bash":
        cmd = ["bash", "-euo", "pipefail", "-c", example.code]
    else:
        cmd = [sys.executable, "-c", example.code]
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != example.exit_code:
        raise AssertionError(
            f"{example.name} exited {done.returncode}, expected {example.exit_code}\n"
            f"--- code\n{example.code}--- stdout\n{done.stdout[-3000:]}"
            f"--- stderr\n{done.stderr[-3000:]}"
        )
    return done
