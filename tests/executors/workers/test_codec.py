"""The frame codec between a worker pool and its workers."""

from __future__ import annotations

import io

import pytest

from open_autoglm.executors.workers.codec import Op, read_frame, write_frame


def test_frames_round_trip_with_their_payload_and_the_op_as_its_value() -> None:
    stream = io.BytesIO()
    write_frame(stream, {"op": Op.EMBED, "texts": ["a", "é"]}, b"\x00\x01")
    write_frame(stream, {"ok": True})
    stream.seek(0)
    header, payload = read_frame(stream)
    assert header == {"op": "embed", "texts": ["a", "é"]} and payload == b"\x00\x01"
    assert Op(header["op"]) is Op.EMBED
    assert read_frame(stream) == ({"ok": True}, b"")


def test_a_torn_stream_is_an_eof() -> None:
    stream = io.BytesIO()
    write_frame(stream, {"ok": True}, b"payload")
    torn = io.BytesIO(stream.getvalue()[:-3])
    with pytest.raises(EOFError, match="pipe closed"):
        read_frame(torn)
