"""The webhook signature as a receiver checks it: fresh timestamps, the exact body, the endpoint's secret."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from notify.signing import signature, verify


@given(secret=st.text(min_size=1, max_size=64), body=st.binary(max_size=2048))
def test_a_signed_body_verifies_and_any_change_does_not(secret, body):
    now = int(time.time())
    header = signature(secret, now, body)
    assert verify(secret, timestamp=str(now), body=body, header=header, now=now)
    assert not verify(secret, timestamp=str(now), body=body + b"x", header=header, now=now)
    assert not verify(secret + "x", timestamp=str(now), body=body, header=header, now=now)
    assert not verify(secret, timestamp=str(now + 1), body=body, header=header, now=now)


def test_an_old_timestamp_is_refused_as_a_replay():
    then = int(time.time()) - 301
    assert not verify("s", timestamp=str(then), body=b"{}", header=signature("s", then, b"{}"), now=time.time())


@given(timestamp=st.text(max_size=40), header=st.text(max_size=100))
def test_whatever_headers_arrive_verify_answers_a_bool(timestamp, header):
    assert verify("s", timestamp=timestamp, body=b"{}", header=header, now=time.time()) is False
