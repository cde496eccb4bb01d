"""Miss Manners (the OPS5 benchmark) on this engine, CLIPS 6.4 (clipspy) and experta.

Data sets are generated the way the original OPS5 ``generate`` program does: N guests, half of
each sex, each with a random 2..H hobbies out of H (H = 3 up to 64 guests, 5 for 128, as in the
classic ``mannersN.fct`` files), ``last_seat`` N, ``count`` 1, ``context`` start.
The program is the CLIPS version; ``make_path`` and ``are_we_done`` get salience 1 in every
engine (as NRules does) so the order does not hinge on tie-breaking among equal activations;
``print_results`` also asserts a ``result`` fact so the seating can be checked.

Run: .venv/bin/python -m benchmarks.rules.manners [16 32 64 128]
"""

from __future__ import annotations

import random
import sys
from typing import Any

from benchmarks.rules.common import print_table, run_experta, timed, write_results
from open_autoglm.rules.engine import ActionContext, Engine
from open_autoglm.rules.model import Constraint, Not, Op, Pattern, Rule, Var

EXPERTA_MAX = 32


def generate(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Return the fact records of the classic manners-N data set."""
    rng = random.Random(seed)
    hobbies = 3 if n <= 64 else 5
    sexes = ["m"] * (n // 2) + ["f"] * (n - n // 2)
    rng.shuffle(sexes)
    facts: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        for h in rng.sample(range(1, hobbies + 1), rng.randint(2, hobbies)):
            facts.append({"type": "guest", "name": f"n{i}", "sex": sexes[i - 1], "hobby": f"h{h}"})
    facts += [
        {"type": "last_seat", "seat": n},
        {"type": "count", "c": 1},
        {"type": "context", "state": "start"},
    ]
    return facts


def check_seating(facts: list[dict[str, Any]], result: list[tuple[str, int]]) -> bool:
    """Valid: every seat 1..N once, every guest once, neighbours of opposite sex sharing a hobby."""
    guests: dict[str, tuple[str, set[str]]] = {}
    for f in facts:
        if f["type"] == "guest":
            guests.setdefault(f["name"], (f["sex"], set()))[1].add(f["hobby"])
    n = len(guests)
    by_seat = {s: name for name, s in result}
    if sorted(by_seat) != list(range(1, n + 1)) or sorted(by_seat.values()) != sorted(guests):
        return False
    for s in range(1, n):
        (sa, ha), (sb, hb) = guests[by_seat[s]], guests[by_seat[s + 1]]
        if sa == sb or not (ha & hb):
            return False
    return True


def _c(field: str, value: Any, op: Op = Op.EQ) -> Constraint:
    if isinstance(value, str) and value.startswith("?"):
        value = Var(value[1:])
    return Constraint(field, op, value)


def _p(type_: str, bind: str | None = None, **fields: Any) -> Pattern:
    cons = []
    for k, v in fields.items():
        if isinstance(v, tuple):
            cons.append(_c(k, v[1], v[0]))
        else:
            cons.append(_c(k, v))
    return Pattern(type_, tuple(cons), bind)


def manners_rules() -> list[Rule]:
    def assign_first_seat(ctx: ActionContext) -> None:
        b = ctx.bindings
        n, c = b["n"], b["c"]
        ctx.assert_fact("seating", seat1=1, name1=n, name2=n, seat2=1, id=c, pid=0, path_done="yes")
        ctx.assert_fact("path", id=c, name=n, seat=1)
        ctx.modify(b["f3"], c=c + 1)
        ctx.modify(b["f1"], state="assign_seats")

    def find_seating(ctx: ActionContext) -> None:
        b = ctx.bindings
        c, s2 = b["c"], b["seat2"]
        ctx.assert_fact(
            "seating",
            seat1=s2,
            name1=b["n2"],
            name2=b["g2"],
            seat2=s2 + 1,
            id=c,
            pid=b["id"],
            path_done="no",
        )
        ctx.assert_fact("path", id=c, name=b["g2"], seat=s2 + 1)
        ctx.assert_fact("chosen", id=b["id"], name=b["g2"], hobby=b["h1"])
        ctx.modify(b["f5"], c=c + 1)
        ctx.modify(b["f1"], state="make_path")

    def make_path(ctx: ActionContext) -> None:
        b = ctx.bindings
        ctx.assert_fact("path", id=b["id"], name=b["n1"], seat=b["s"])

    def path_done(ctx: ActionContext) -> None:
        ctx.modify(ctx.bindings["f2"], path_done="yes")
        ctx.modify(ctx.bindings["f1"], state="check_done")

    def are_we_done(ctx: ActionContext) -> None:
        ctx.modify(ctx.bindings["f1"], state="print_results")

    def cont(ctx: ActionContext) -> None:
        ctx.modify(ctx.bindings["f1"], state="assign_seats")

    def print_results(ctx: ActionContext) -> None:
        b = ctx.bindings
        ctx.retract(b["f4"])
        ctx.assert_fact("result", name=b["n"], seat=b["s"])

    def all_done(ctx: ActionContext) -> None:
        ctx.halt()

    return [
        Rule(
            "assign_first_seat",
            (
                _p("context", "f1", state="start"),
                _p("guest", name="?n"),
                _p("count", "f3", c="?c"),
            ),
            (assign_first_seat,),
        ),
        Rule(
            "find_seating",
            (
                _p("context", "f1", state="assign_seats"),
                _p(
                    "seating",
                    seat1="?seat1",
                    seat2="?seat2",
                    name2="?n2",
                    id="?id",
                    pid="?pid",
                    path_done="yes",
                ),
                _p("guest", name="?n2", sex="?s1", hobby="?h1"),
                _p("guest", name="?g2", sex=(Op.NE, "?s1"), hobby="?h1"),
                _p("count", "f5", c="?c"),
                Not(_p("path", id="?id", name="?g2")),
                Not(_p("chosen", id="?id", name="?g2", hobby="?h1")),
            ),
            (find_seating,),
        ),
        Rule(
            "make_path",
            (
                _p("context", state="make_path"),
                _p("seating", id="?id", pid="?pid", path_done="no"),
                _p("path", id="?pid", name="?n1", seat="?s"),
                Not(_p("path", id="?id", name="?n1")),
            ),
            (make_path,),
            salience=1,
        ),
        Rule(
            "path_done",
            (
                _p("context", "f1", state="make_path"),
                _p("seating", "f2", path_done="no"),
            ),
            (path_done,),
        ),
        Rule(
            "are_we_done",
            (
                _p("context", "f1", state="check_done"),
                _p("last_seat", seat="?l_seat"),
                _p("seating", seat2="?l_seat"),
            ),
            (are_we_done,),
            salience=1,
        ),
        Rule("continue", (_p("context", "f1", state="check_done"),), (cont,)),
        Rule(
            "print_results",
            (
                _p("context", state="print_results"),
                _p("seating", id="?id", seat2="?s2"),
                _p("last_seat", seat="?s2"),
                _p("path", "f4", id="?id", name="?n", seat="?s"),
            ),
            (print_results,),
            salience=1,
        ),
        Rule("all_done", (_p("context", state="print_results"),), (all_done,)),
    ]


def run_ours(facts: list[dict[str, Any]]) -> dict[str, Any]:
    def go() -> tuple[int, list[tuple[str, int]]]:
        engine = Engine(manners_rules(), trace=False)
        engine.assert_facts(facts)
        fired = engine.run()
        return fired, [(f["name"], f["seat"]) for f in engine.facts("result")]

    seconds, (fired, result) = timed(go)
    return {"seconds": seconds, "fired": fired, "valid": check_seating(facts, result)}


CLIPS_PROGRAM = """
(deftemplate guest (slot name) (slot sex) (slot hobby))
(deftemplate last_seat (slot seat))
(deftemplate seating (slot seat1) (slot name1) (slot name2) (slot seat2) (slot id) (slot pid)
   (slot path_done))
(deftemplate context (slot state))
(deftemplate path (slot id) (slot name) (slot seat))
(deftemplate chosen (slot id) (slot name) (slot hobby))
(deftemplate count (slot c))
(deftemplate result (slot name) (slot seat))
(defrule assign_first_seat
   ?f1 <- (context (state start)) (guest (name ?n)) ?f3 <- (count (c ?c))
   =>
   (assert (seating (seat1 1) (name1 ?n) (name2 ?n) (seat2 1) (id ?c) (pid 0) (path_done yes)))
   (assert (path (id ?c) (name ?n) (seat 1)))
   (modify ?f3 (c (+ ?c 1)))
   (modify ?f1 (state assign_seats)))
(defrule find_seating
   ?f1 <- (context (state assign_seats))
   (seating (seat1 ?seat1) (seat2 ?seat2) (name2 ?n2) (id ?id) (pid ?pid) (path_done yes))
   (guest (name ?n2) (sex ?s1) (hobby ?h1))
   (guest (name ?g2) (sex ~?s1) (hobby ?h1))
   ?f5 <- (count (c ?c))
   (not (path (id ?id) (name ?g2)))
   (not (chosen (id ?id) (name ?g2) (hobby ?h1)))
   =>
   (assert (seating (seat1 ?seat2) (name1 ?n2) (name2 ?g2) (seat2 (+ ?seat2 1)) (id ?c)
      (pid ?id) (path_done no)))
   (assert (path (id ?c) (name ?g2) (seat (+ ?seat2 1))))
   (assert (chosen (id ?id) (name ?g2) (hobby ?h1)))
   (modify ?f5 (c (+ ?c 1)))
   (modify ?f1 (state make_path)))
(defrule make_path (declare (salience 1))
   (context (state make_path))
   (seating (id ?id) (pid ?pid) (path_done no))
   (path (id ?pid) (name ?n1) (seat ?s))
   (not (path (id ?id) (name ?n1)))
   =>
   (assert (path (id ?id) (name ?n1) (seat ?s))))
(defrule path_done
   ?f1 <- (context (state make_path)) ?f2 <- (seating (path_done no))
   =>
   (modify ?f2 (path_done yes))
   (modify ?f1 (state check_done)))
(defrule are_we_done (declare (salience 1))
   ?f1 <- (context (state check_done)) (last_seat (seat ?l_seat)) (seating (seat2 ?l_seat))
   =>
   (modify ?f1 (state print_results)))
(defrule continue
   ?f1 <- (context (state check_done))
   =>
   (modify ?f1 (state assign_seats)))
(defrule print_results (declare (salience 1))
   (context (state print_results)) (seating (id ?id) (seat2 ?s2)) (last_seat (seat ?s2))
   ?f4 <- (path (id ?id) (name ?n) (seat ?s))
   =>
   (retract ?f4)
   (assert (result (name ?n) (seat ?s))))
(defrule all_done
   (context (state print_results))
   =>
   (halt))
"""


def clips_facts_text(facts: list[dict[str, Any]]) -> str:
    lines = []
    for f in facts:
        slots = " ".join(f"({k} {v})" for k, v in f.items() if k != "type")
        lines.append(f"({f['type']} {slots})")
    return "\n".join(lines)


def run_clips(facts: list[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        import clips
    except ImportError:
        return None
    text = clips_facts_text(facts)

    def go() -> tuple[int, list[tuple[str, int]]]:
        env = clips.Environment()
        for construct in _split_constructs(CLIPS_PROGRAM):
            env.build(construct)
        env.reset()
        env.load_facts(text)
        fired = env.run()
        res = [(str(f["name"]), int(f["seat"])) for f in env.facts() if f.template.name == "result"]
        return fired, res

    seconds, (fired, result) = timed(go)
    return {"seconds": seconds, "fired": fired, "valid": check_seating(facts, result)}


def _split_constructs(program: str) -> list[str]:
    out, depth, start = [], 0, None
    for i, ch in enumerate(program):
        if ch == "(":
            if depth == 0:
                start = i
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0 and start is not None:
                out.append(program[start : i + 1])
    return out


def main(sizes: list[int]) -> list[dict[str, Any]]:
    rows, records = [], []
    for n in sizes:
        facts = generate(n)
        ours = run_ours(facts)
        clp = run_clips(facts)
        exp = run_experta("experta_manners.py", {"facts": facts}) if n <= EXPERTA_MAX else None
        if exp is not None:
            exp["valid"] = check_seating(facts, [tuple(x) for x in exp.pop("result")])
        ratio = ours["seconds"] / clp["seconds"] if clp else None
        exp_ratio = exp["seconds"] / ours["seconds"] if exp else None
        records.append(
            {"n": n, "ours": ours, "clips": clp, "experta": exp, "ours_over_clips": ratio}
        )
        rows.append(
            [
                n,
                ours["seconds"],
                ours["fired"],
                ours["valid"],
                clp and clp["seconds"],
                clp and clp["fired"],
                clp and clp["valid"],
                exp and exp["seconds"],
                exp and exp["valid"],
                ratio,
                exp_ratio,
            ]
        )
    print_table(
        "Miss Manners (seconds, wall; firings)",
        [
            "guests",
            "ours s",
            "ours fired",
            "ours ok",
            "clips s",
            "clips fired",
            "clips ok",
            "experta s",
            "experta ok",
            "ours/clips",
            "experta/ours",
        ],
        rows,
    )
    write_results("manners", records)
    return records


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [16, 32, 64, 128])
