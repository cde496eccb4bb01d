"""Miss Manners in experta; run inside .bench-venvs/experta (reads JSON on stdin)."""

import collections
import collections.abc
import json
import sys
import time

# experta pins frozendict 1.x, which still uses collections.Mapping (removed in Python 3.10).
collections.Mapping = collections.abc.Mapping  # type: ignore[attr-defined]


from experta import AS, MATCH, NOT, Fact, KnowledgeEngine, Rule

facts = json.load(sys.stdin)["facts"]


class Guest(Fact):
    pass


class LastSeat(Fact):
    pass


class Seating(Fact):
    pass


class Context(Fact):
    pass


class Path(Fact):
    pass


class Chosen(Fact):
    pass


class Count(Fact):
    pass


class Result(Fact):
    pass


class Manners(KnowledgeEngine):
    @Rule(AS.f1 << Context(state="start"), Guest(name=MATCH.n), AS.f3 << Count(c=MATCH.c))
    def assign_first_seat(self, f1, n, f3, c):
        self.declare(Seating(seat1=1, name1=n, name2=n, seat2=1, id=c, pid=0, path_done="yes"))
        self.declare(Path(id=c, name=n, seat=1))
        self.modify(f3, c=c + 1)
        self.modify(f1, state="assign_seats")

    @Rule(
        AS.f1 << Context(state="assign_seats"),
        Seating(
            seat1=MATCH.seat1,
            seat2=MATCH.seat2,
            name2=MATCH.n2,
            id=MATCH.id,
            pid=MATCH.pid,
            path_done="yes",
        ),
        Guest(name=MATCH.n2, sex=MATCH.s1, hobby=MATCH.h1),
        Guest(name=MATCH.g2, sex=~MATCH.s1, hobby=MATCH.h1),
        AS.f5 << Count(c=MATCH.c),
        NOT(Path(id=MATCH.id, name=MATCH.g2)),
        NOT(Chosen(id=MATCH.id, name=MATCH.g2, hobby=MATCH.h1)),
    )
    def find_seating(self, f1, seat1, seat2, n2, id, pid, s1, h1, g2, f5, c):
        self.declare(
            Seating(seat1=seat2, name1=n2, name2=g2, seat2=seat2 + 1, id=c, pid=id, path_done="no")
        )
        self.declare(Path(id=c, name=g2, seat=seat2 + 1))
        self.declare(Chosen(id=id, name=g2, hobby=h1))
        self.modify(f5, c=c + 1)
        self.modify(f1, state="make_path")

    @Rule(
        Context(state="make_path"),
        Seating(id=MATCH.id, pid=MATCH.pid, path_done="no"),
        Path(id=MATCH.pid, name=MATCH.n1, seat=MATCH.s),
        NOT(Path(id=MATCH.id, name=MATCH.n1)),
        salience=1,
    )
    def make_path(self, id, pid, n1, s):
        self.declare(Path(id=id, name=n1, seat=s))

    @Rule(AS.f1 << Context(state="make_path"), AS.f2 << Seating(path_done="no"))
    def path_done(self, f1, f2):
        self.modify(f2, path_done="yes")
        self.modify(f1, state="check_done")

    @Rule(
        AS.f1 << Context(state="check_done"),
        LastSeat(seat=MATCH.last),
        Seating(seat2=MATCH.last),
        salience=1,
    )
    def are_we_done(self, f1, last):
        self.modify(f1, state="print_results")

    @Rule(AS.f1 << Context(state="check_done"))
    def continue_(self, f1):
        self.modify(f1, state="assign_seats")

    @Rule(
        Context(state="print_results"),
        Seating(id=MATCH.id, seat2=MATCH.s2),
        LastSeat(seat=MATCH.s2),
        AS.f4 << Path(id=MATCH.id, name=MATCH.n, seat=MATCH.s),
        salience=1,
    )
    def print_results(self, id, s2, f4, n, s):
        self.retract(f4)
        self.declare(Result(name=n, seat=s))

    @Rule(Context(state="print_results"))
    def all_done(self):
        self.halt()


kinds = {"guest": Guest, "last_seat": LastSeat, "count": Count, "context": Context}
t0 = time.perf_counter()
engine = Manners()
engine.reset()
for f in facts:
    f = dict(f)
    engine.declare(kinds[f.pop("type")](**f))
engine.run()
seconds = time.perf_counter() - t0
result = [[f["name"], f["seat"]] for f in engine.facts.values() if isinstance(f, Result)]
print(json.dumps({"seconds": seconds, "result": result}))
