"""The rule DSL: a ruleset that fails validation lists every problem with its location."""

from __future__ import annotations

import pytest

from open_autoglm.errors import ValidationError
from open_autoglm.rules.dsl import parse_ruleset


def test_validation_lists_all_problems_with_locations() -> None:
    bad = {
        "schemas": {"user": {"name": "str", "age": "int"}},
        "rules": [{
            "name": "r",
            "when": [{"user": {"name": "?n", "age": {">": "old"}, "email": "?e"}},
                     {"test": "?zz > 1"}],
            "then": [{"emit": {"who": "?nobody"}}, {"launch_rockets": {}}],
        }],
    }  # fmt: skip
    with pytest.raises(ValidationError) as info:
        parse_ruleset(bad)
    msgs = " | ".join(d["msg"] for d in info.value.details)
    assert "type mismatch" in msgs and "unknown field 'email'" in msgs
    assert "?zz" in msgs and "?nobody" in msgs and "unknown action 'launch_rockets'" in msgs
    assert all(d["loc"][:2] == ["rules", 0] for d in info.value.details)
