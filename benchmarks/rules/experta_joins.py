"""Join-throughput scenario in experta; run inside .bench-venvs/experta (reads JSON on stdin)."""

import collections
import collections.abc
import json
import sys
import time

# experta pins frozendict 1.x, which still uses collections.Mapping (removed in Python 3.10).
collections.Mapping = collections.abc.Mapping  # type: ignore[attr-defined]


from experta import MATCH, Fact, KnowledgeEngine, Rule

payload = json.load(sys.stdin)
facts, r = payload["facts"], payload["r"]


class A(Fact):
    pass


class B(Fact):
    pass


counter = [0]
attrs = {}
for i in range(r):

    def hit(self, k):
        counter[0] += 1

    attrs[f"j{i}"] = Rule(A(cat=i, key=MATCH.k), B(key=MATCH.k))(hit)
Engine = type("Engine", (KnowledgeEngine,), attrs)

t0 = time.perf_counter()
engine = Engine()
engine.reset()
for f in facts:
    if f["type"] == "a":
        engine.declare(A(key=f["key"], cat=f["cat"], v=f["v"]))
    else:
        engine.declare(B(key=f["key"], v=f["v"]))
engine.run()
print(json.dumps({"seconds": time.perf_counter() - t0, "counted": counter[0]}))
