"""Block1 reassembly within bounds: whole bodies come out whole, nothing grows past its limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coap.blocks import Block1Spool, BlockRefused


def blocks_of(body: bytes, size_exponent: int) -> list[tuple[int, bool, bytes]]:
    size = 1 << (size_exponent + 4)
    parts = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    return [(n, n < len(parts) - 1, part) for n, part in enumerate(parts)]


@given(body=st.binary(max_size=5000), size_exponent=st.integers(0, 6))
def test_a_body_sent_in_blocks_comes_out_whole(body, size_exponent):
    spool = Block1Spool(max_bytes=5000)
    out = None
    for number, more, part in blocks_of(body, size_exponent):
        out = spool.feed("k", number=number, more=more, size_exponent=size_exponent, payload=part)
        assert (out is None) == more
    assert out == body and len(spool) == 0


def test_an_upload_past_the_limit_is_refused_and_forgotten():
    spool = Block1Spool(max_bytes=100)
    for number in range(6):
        spool.feed("k", number=number, more=True, size_exponent=0, payload=b"x" * 16)
    with pytest.raises(BlockRefused) as refused:
        spool.feed("k", number=6, more=True, size_exponent=0, payload=b"x" * 16)
    assert refused.value.reason == "too_large" and len(spool) == 0


def test_a_block_out_of_order_is_incomplete():
    spool = Block1Spool(max_bytes=1000)
    spool.feed("k", number=0, more=True, size_exponent=0, payload=b"x" * 16)
    with pytest.raises(BlockRefused) as refused:
        spool.feed("k", number=2, more=False, size_exponent=0, payload=b"y")
    assert refused.value.reason == "incomplete"


def test_uploads_under_way_are_bounded_in_number_and_time():
    now = [0.0]
    spool = Block1Spool(max_bytes=1000, max_uploads=3, ttl=10, clock=lambda: now[0])
    for key in range(3):
        spool.feed(key, number=0, more=True, size_exponent=0, payload=b"x" * 16)
    with pytest.raises(BlockRefused) as refused:
        spool.feed("one more", number=0, more=True, size_exponent=0, payload=b"x" * 16)
    assert refused.value.reason == "busy"
    now[0] = 11.0
    assert spool.feed("one more", number=0, more=True, size_exponent=0, payload=b"x" * 16) is None
    assert len(spool) == 1


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**20), st.booleans(), st.integers(0, 7),
                          st.binary(max_size=300)), max_size=40))
def test_any_sequence_of_blocks_is_taken_or_refused_and_stays_bounded(feeds):
    spool = Block1Spool(max_bytes=2048, max_uploads=2)
    for key, number, more, size_exponent, payload in feeds:
        try:
            out = spool.feed(key, number=number, more=more, size_exponent=size_exponent, payload=payload)
        except BlockRefused as exc:
            assert exc.reason in {"too_large", "incomplete", "bad_block", "busy"}
            continue
        assert out is None or len(out) <= 2048
        assert len(spool) <= 2
        assert all(len(u.data) <= 2048 for u in spool._uploads.values())
