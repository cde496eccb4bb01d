"""Admission policies built on the engine."""

from __future__ import annotations

from open_autoglm.rules.policy import AdmissionPolicy


def test_policy_blocks_risky_login() -> None:
    policy = AdmissionPolicy({"rules": [
        {"name": "block_access", "salience": 10,
         "when": [{"user_login": {"user": "?u", "risk_score": {">": 0.8}}}],
         "then": [{"block": {"reason": "risk for {?u}"}}]},
        {"name": "prio", "when": [{"task": {"priority": {">": 5}}}],
         "then": [{"set_priority": {"priority": 5}}, {"tag": {"tag": "capped"}}]},
    ]})  # fmt: skip
    d = policy.evaluate(
        {"priority": 9}, extra=[{"type": "user_login", "user": "eve", "risk_score": 0.93}]
    )
    assert d.blocked and d.block_rule == "block_access" and d.reason == "risk for eve"
    d = policy.evaluate(
        {"priority": 9}, extra=[{"type": "user_login", "user": "bob", "risk_score": 0.2}]
    )
    assert not d.blocked and d.priority == 5 and d.tags == ["capped"] and d.fired == ["prio"]
