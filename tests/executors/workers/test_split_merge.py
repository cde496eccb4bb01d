"""Splitting requests across workers and merging their replies (pure functions)."""

from __future__ import annotations

import numpy as np

from open_autoglm.errors import TaskFailedError, UnavailableError
from open_autoglm.executors.workers.codec import Op
from open_autoglm.executors.workers.split_merge import (
    WorkerRequest,
    error_from,
    merge_replies,
    split_by_length,
    split_reply,
)


def _embed_reply(rows: np.ndarray) -> tuple[dict, bytes]:
    header = {"ok": True, "shape": list(rows.shape), "counts": [int(r[0]) for r in rows]}
    return header, rows.astype("<f4").tobytes()


def test_split_by_length_groups_similar_lengths_with_similar_work() -> None:
    assert split_by_length(["aa", "b" * 30], 2) == [[0], [1]]
    assert split_by_length(["x"] * 8, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert split_by_length(["a"], 2) == [[0]]


def test_merged_parts_come_back_in_the_original_order() -> None:
    texts = ["long text here", "a", "medium one", "bb"]
    parts = split_by_length(texts, 2)
    vectors = np.arange(len(texts) * 3, dtype="<f4").reshape(len(texts), 3)
    replies = [_embed_reply(vectors[idx]) for idx in parts]
    header, payload = merge_replies(Op.EMBED, parts, replies, len(texts))
    merged = np.frombuffer(payload, dtype="<f4").reshape(header["shape"])
    assert np.array_equal(merged, vectors)
    assert header["counts"] == [int(v[0]) for v in vectors]


def test_one_merged_call_splits_back_per_request() -> None:
    group = [WorkerRequest(Op.CLASSIFY, ["a", "b"], (1,)), WorkerRequest(Op.CLASSIFY, ["c"], (1,))]
    replies = split_reply({"ok": True, "predictions": [1, 2, 3]}, b"", group)
    assert replies == [
        ({"ok": True, "predictions": [1, 2]}, b""),
        ({"ok": True, "predictions": [3]}, b""),
    ]
    failed = split_reply(
        {"ok": False, "error": {"code": "unavailable", "message": "x"}}, b"", group
    )
    assert all(isinstance(e, UnavailableError) for e in failed)


def test_worker_errors_become_typed_errors() -> None:
    assert isinstance(error_from({"code": "unavailable", "message": "gone"}), UnavailableError)
    crashed = error_from({"code": "internal", "message": "boom"})  # an unexpected exception
    assert type(crashed) is TaskFailedError and crashed.message == "boom"
    assert type(error_from({"code": "no-such-code"})) is TaskFailedError
