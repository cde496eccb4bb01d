"""Run every rule-engine benchmark: ``.venv/bin/python -m benchmarks.rules``."""

from benchmarks.rules import joins, manners

if __name__ == "__main__":
    manners.main([16, 32, 64, 128])
    joins.main([(n, r) for n in (10_000, 100_000) for r in (10, 100)])
