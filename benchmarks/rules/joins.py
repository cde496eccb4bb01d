"""Join throughput: N facts of two types joined on a shared key by R rules.

Half the facts are ``a(key, cat)``, half ``b(key)``; keys repeat every N/8 facts, so each key
has 4 a's and 4 b's. Rule r is ``a(cat == r, key ?k), b(key ?k)``: the alpha dispatch sends an
``a`` to one rule's memory by hash, and every join is a hash lookup. Every activation fires an
action that counts it; the count must equal the exact number of (a, b) pairs.

Run: .venv/bin/python -m benchmarks.rules.joins
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from benchmarks.rules.common import print_table, run_experta, timed, write_results
from open_autoglm.rules.engine import ActionContext, Engine
from open_autoglm.rules.model import Constraint, Op, Pattern, Rule, Var

EXPERTA_MAX = 10_000


def generate(n: int, r: int) -> list[dict[str, Any]]:
    keys = max(1, n // 8)
    half = n // 2
    facts = [{"type": "a", "key": i % keys, "cat": i % r, "v": i} for i in range(half)]
    facts += [{"type": "b", "key": i % keys, "v": i} for i in range(half)]
    return facts


def expected(facts: list[dict[str, Any]], r: int) -> int:
    bs = Counter(f["key"] for f in facts if f["type"] == "b")
    return sum(bs[f["key"]] for f in facts if f["type"] == "a" and f["cat"] < r)


def run_ours(facts: list[dict[str, Any]], r: int) -> dict[str, Any]:
    count = [0]

    def hit(ctx: ActionContext) -> None:
        count[0] += 1

    rules = [
        Rule(
            f"j{i}",
            (
                Pattern("a", (Constraint("cat", Op.EQ, i), Constraint("key", Op.EQ, Var("k")))),
                Pattern("b", (Constraint("key", Op.EQ, Var("k")),)),
            ),
            (hit,),
        )
        for i in range(r)
    ]

    def go() -> int:
        engine = Engine(rules, trace=False)
        engine.assert_facts(facts)
        return engine.run()

    seconds, fired = timed(go)
    return {"seconds": seconds, "fired": fired, "counted": count[0]}


def run_clips(facts: list[dict[str, Any]], r: int) -> dict[str, Any] | None:
    try:
        import clips
    except ImportError:
        return None
    text = "\n".join(
        f"(a (key {f['key']}) (cat {f['cat']}) (v {f['v']}))"
        if f["type"] == "a"
        else f"(b (key {f['key']}) (v {f['v']}))"
        for f in facts
    )

    def go() -> tuple[int, int]:
        env = clips.Environment()
        env.build("(defglobal ?*n* = 0)")
        env.build("(deftemplate a (slot key) (slot cat) (slot v))")
        env.build("(deftemplate b (slot key) (slot v))")
        for i in range(r):
            env.build(
                f"(defrule j{i} (a (cat {i}) (key ?k)) (b (key ?k)) => (bind ?*n* (+ ?*n* 1)))"
            )
        env.reset()
        env.load_facts(text)
        fired = env.run()
        return fired, int(env.eval("?*n*"))

    seconds, (fired, counted) = timed(go)
    return {"seconds": seconds, "fired": fired, "counted": counted}


def main(cases: list[tuple[int, int]]) -> list[dict[str, Any]]:
    rows, records = [], []
    for n, r in cases:
        facts = generate(n, r)
        exp = expected(facts, r)
        ours = run_ours(facts, r)
        clp = run_clips(facts, r)
        xp = run_experta("experta_joins.py", {"facts": facts, "r": r}) if n <= EXPERTA_MAX else None
        ratio = ours["seconds"] / clp["seconds"] if clp else None
        records.append(
            {
                "n": n,
                "r": r,
                "expected": exp,
                "ours": ours,
                "clips": clp,
                "experta": xp,
                "ours_over_clips": ratio,
            }
        )
        rows.append(
            [
                n,
                r,
                exp,
                ours["counted"],
                ours["seconds"],
                clp and clp["counted"],
                clp and clp["seconds"],
                xp and xp["counted"],
                xp and xp["seconds"],
                ratio,
                xp and xp["seconds"] / ours["seconds"],
            ]
        )
    print_table(
        "Join throughput (seconds, wall; activations fired)",
        [
            "N",
            "R",
            "expected",
            "ours",
            "ours s",
            "clips",
            "clips s",
            "experta",
            "experta s",
            "ours/clips",
            "experta/ours",
        ],
        rows,
    )
    write_results("joins", records)
    return records


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000]
    main([(n, r) for n in sizes for r in (10, 100)])
