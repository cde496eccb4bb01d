"""Small slices of the women's clothing reviews table, and its schema, for fusion tests."""

from __future__ import annotations

from functools import cache
from typing import Any

from helpers.paths import SHARED_DATA

__all__ = ["REVIEWS", "REVIEW_SCHEMA", "review_rows"]

REVIEWS = SHARED_DATA / "multimodal" / "womens_clothing_reviews.parquet"
REVIEW_SCHEMA: dict[str, Any] = {
    "text": ["Title", "Review Text"],
    "categorical": ["Division Name", "Department Name", "Class Name"],
    "numeric": ["Age", "Positive Feedback Count"],
    "label": "Recommended IND",
}


@cache
def _records() -> tuple[dict[str, Any], ...]:
    import pandas as pd

    frame = pd.read_parquet(REVIEWS).head(2000)
    frame = frame.astype(object).where(frame.notna(), None)
    return tuple(frame.to_dict(orient="records"))


def review_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Rows ``start .. start + n`` of the table as JSON records (None where missing)."""
    rows = [dict(r) for r in _records()[start : start + n]]
    for row in rows:
        for key, value in row.items():
            if hasattr(value, "item"):
                row[key] = value.item()
    return rows
