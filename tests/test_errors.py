"""The error hierarchy is one fact: the tree drawn in errors.py's docstring, the classes, the
code-to-class map and the code-to-status table agree."""

from __future__ import annotations

import re

import pytest

from open_autoglm import errors
from open_autoglm.api.errors import status_for_code

# "    │   ├── TaskTimeoutError          504 timeout    (...)" -> depth, name, status, code
_LINE = re.compile(
    r"^    (?P<indent>[│├└─ ]*)(?P<name>[A-Z]\w+)\s+(?P<status>\d{3})\s+(?P<code>\w+)"
)


def _drawn() -> list[tuple[int, str, int, str]]:
    rows = []
    for line in (errors.__doc__ or "").splitlines():
        m = _LINE.match(line)
        if m:
            depth = len(m["indent"]) // 4
            rows.append((depth, m["name"], int(m["status"]), m["code"]))
    return rows


def test_the_docstring_tree_is_the_class_tree() -> None:
    rows = _drawn()
    assert [name for _, name, _, _ in rows] == [c.__name__ for c in errors.error_classes()]
    parents: list[str] = []
    for depth, name, _, code in rows:
        cls = getattr(errors, name)
        del parents[depth:]
        if parents:
            assert cls.__bases__ == (getattr(errors, parents[-1]),), name
        assert cls.code == code, name
        parents.append(name)


def test_every_drawn_status_is_the_api_status() -> None:
    for _, name, status, code in _drawn():
        assert status_for_code(code) == status, name


def test_codes_map_to_their_classes_and_rebuild() -> None:
    assert set(errors.ERROR_CLASSES) == {c.code for c in errors.error_classes()}
    assert errors.error_class("task_taken_over") is errors.TaskTakenOverError
    assert errors.error_class("no-such-code", errors.TaskFailedError) is errors.TaskFailedError
    rebuilt = errors.error_from_code("circuit_open", "upstream down")
    # No retry_after travelled: the nearest class that needs none stands in.
    assert type(rebuilt) is errors.UnavailableError and rebuilt.message == "upstream down"


@pytest.mark.parametrize("cls", list(errors.error_classes()))
def test_every_class_is_exported(cls: type[errors.AutoGLMError]) -> None:
    assert cls.__name__ in errors.__all__
