"""Property tests of rule validation and the threshold state machine (alarms/rules.py), pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from alarms import rules as R
from core.errors import PayloadInvalid

T0 = datetime(2026, 1, 1, tzinfo=UTC)
anything = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=70),
                     st.lists(st.integers(), max_size=2))
numbers = st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))


@given(kind=st.one_of(st.sampled_from(R.KINDS), anything), severity=st.one_of(st.sampled_from(R.SEVERITIES), anything),
       metric=st.one_of(st.just("temp"), anything), low=anything, high=anything, low_clear=anything,
       high_clear=anything, duration=anything, command=st.one_of(st.just(""), st.just("reboot"), anything))
def test_any_fields_give_a_valid_rule_or_a_readable_refusal(kind, severity, metric, low, high, low_clear,
                                                             high_clear, duration, command):
    try:
        spec = R.rule_spec(kind=kind, severity=severity, metric=metric, low=low, high=high, low_clear=low_clear,
                           high_clear=high_clear, duration=duration, command=command)
    except PayloadInvalid as exc:
        assert exc.reason == "bad_rule" and str(exc)
        return
    assert spec.kind in R.KINDS and spec.severity in R.SEVERITIES and 0 <= spec.duration <= R.MAX_DURATION
    if spec.kind in R.THRESHOLD_KINDS:
        # A valid threshold rule never raises and clears on the same value: hysteresis cannot flap on one sample.
        for v in (spec.low, spec.high, spec.low_clear, spec.high_clear):
            if v is not None:
                assert not (spec.raises(v) and spec.clears(v))


@st.composite
def threshold_rules(draw):
    kind = draw(st.sampled_from(R.THRESHOLD_KINDS))
    low = draw(st.floats(-100, 0)) if kind != R.ABOVE else None
    high = draw(st.floats(1, 100)) if kind != R.BELOW else None
    low_clear = low + draw(st.floats(0, 0.5)) if low is not None and draw(st.booleans()) else None
    high_clear = high - draw(st.floats(0, 0.5)) if high is not None and draw(st.booleans()) else None
    return R.rule_spec(kind=kind, metric="m", low=low, high=high, low_clear=low_clear, high_clear=high_clear,
                       duration=draw(st.sampled_from([0, 1, 5, 30])))


def run(spec, values, *, step=1.0):
    """Feed samples one second apart, playing the database: returns the transitions in order."""
    track, is_open, out = R.Track(), False, []
    for i, v in enumerate(values):
        what = R.step(spec, track, open_=is_open, ts=T0 + timedelta(seconds=i * step), value=v)
        if what in (R.RAISE, R.RETRIGGER, R.CLEAR):
            out.append((i, what))
            is_open = what != R.CLEAR
    return out


@settings(max_examples=300)
@given(spec=threshold_rules(), values=st.lists(st.floats(-150, 150), max_size=80))
def test_raises_and_clears_alternate_and_each_is_justified(spec, values):
    events = run(spec, values)
    is_open = False
    for i, what in events:
        if what == R.RAISE:
            assert not is_open and spec.raises(values[i])
            # The raise condition held on every sample of the last `duration` seconds.
            held = [v for j, v in enumerate(values[: i + 1]) if i - j <= spec.duration]
            assert all(spec.raises(v) for v in held) and (i >= spec.duration or spec.duration == 0)
            is_open = True
        elif what == R.CLEAR:
            assert is_open and spec.clears(values[i])
            is_open = False
        else:
            assert is_open and spec.raises(values[i])


@given(spec=threshold_rules(), n=st.integers(1, 200))
def test_a_condition_that_holds_raises_once_not_once_per_sample(spec, n):
    over = (spec.high + 1) if spec.high is not None else (spec.low - 1)
    events = run(spec, [over] * n)
    assert [w for _, w in events] == ([R.RAISE] if n - 1 >= spec.duration else [])


@given(spec=threshold_rules(), values=st.lists(st.floats(-150, 150), max_size=60))
def test_values_inside_the_hold_band_never_clear(spec, values):
    # Only values strictly between the clear and raise thresholds after a raise: no clear, whatever they are.
    over = (spec.high + 1) if spec.high is not None else (spec.low - 1)
    band = [v for v in values if not spec.raises(v) and not spec.clears(v)]
    events = run(spec, [over] * (int(spec.duration) + 1) + band)
    assert [w for _, w in events] == [R.RAISE]
