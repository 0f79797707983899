"""validate_bars: one reason per bad bar, strictly increasing timestamps, order kept."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantumtrade.data.validation import (
    DUPLICATE_TIMESTAMP,
    HIGH_LOW_INCONSISTENT,
    NEGATIVE_VOLUME,
    NON_FINITE,
    NON_POSITIVE_PRICE,
    OUT_OF_ORDER,
    REASONS,
    validate_bars,
)
from quantumtrade.events import Bar


def bar(ts: int, o: float = 100.0, h: float = 101.0, lo: float = 99.0, c: float = 100.5,
        v: float = 10.0) -> Bar:  # fmt: skip
    return Bar(ts, o, h, lo, c, v)


def test_good_bars_pass_in_order() -> None:
    bars = [bar(1), bar(2), bar(5, v=0.0), bar(6, o=101.0, h=101.0, lo=99.0, c=99.0)]
    assert validate_bars(bars, None) == (bars, [])
    assert validate_bars(bars, 0) == (bars, [])
    assert validate_bars([], 3) == ([], [])


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (bar(1, o=math.nan), NON_FINITE),
        (bar(1, h=math.inf), NON_FINITE),
        (bar(1, lo=-math.inf), NON_FINITE),
        (bar(1, c=math.nan), NON_FINITE),
        (bar(1, v=math.nan), NON_FINITE),
        (bar(1, v=math.inf), NON_FINITE),
        (bar(1, o=0.0), NON_POSITIVE_PRICE),
        (bar(1, lo=-1.0), NON_POSITIVE_PRICE),
        (bar(1, o=1.0, h=1.0, lo=1.0, c=-1.0), NON_POSITIVE_PRICE),
        (bar(1, h=100.2), HIGH_LOW_INCONSISTENT),  # below the close
        (bar(1, h=99.9), HIGH_LOW_INCONSISTENT),  # below the open
        (bar(1, lo=100.2), HIGH_LOW_INCONSISTENT),  # above the open
        (bar(1, o=101.0, h=101.0, lo=100.6, c=100.5), HIGH_LOW_INCONSISTENT),  # above the close
        (bar(1, o=100.0, h=99.0, lo=101.0, c=100.0), HIGH_LOW_INCONSISTENT),  # high < low
        (bar(1, v=-0.1), NEGATIVE_VOLUME),
    ],
)
def test_each_value_fault_has_its_reason(bad: Bar, reason: str) -> None:
    assert reason in REASONS
    assert validate_bars([bad], None) == ([], [(bad, reason)])


def test_timestamps_strictly_increase_from_the_last_stored_bar() -> None:
    assert validate_bars([bar(10)], 10) == ([], [(bar(10), DUPLICATE_TIMESTAMP)])
    assert validate_bars([bar(9)], 10) == ([], [(bar(9), OUT_OF_ORDER)])
    batch = [bar(11), bar(11), bar(13), bar(12), bar(14)]
    accepted, rejected = validate_bars(batch, 10)
    assert accepted == [bar(11), bar(13), bar(14)]
    assert rejected == [(bar(11), DUPLICATE_TIMESTAMP), (bar(12), OUT_OF_ORDER)]


def test_a_rejected_bar_does_not_move_the_timestamp_mark() -> None:
    batch = [bar(1), bar(5, c=math.nan), bar(3), bar(5)]
    accepted, rejected = validate_bars(batch, None)
    assert accepted == [bar(1), bar(3), bar(5)]
    assert rejected == [(batch[1], NON_FINITE)]


def test_value_faults_win_over_timestamp_faults() -> None:
    bad = bar(1, v=-1.0)
    assert validate_bars([bad], 5) == ([], [(bad, NEGATIVE_VOLUME)])


def test_huge_finite_values_are_not_mistaken_for_non_finite() -> None:
    big = bar(1, o=1e308, h=1.7e308, lo=1e308, c=1.5e308, v=1.7e308)
    assert validate_bars([big], None) == ([big], [])


# --- property: any mix of good and malformed bars --------------------------------------------


def reference_reason(b: Bar, prev: int | None) -> str | None:
    """The documented rules, written the slow, obvious way."""
    values = (b.open, b.high, b.low, b.close, b.volume)
    if any(math.isnan(x) or math.isinf(x) for x in values):
        return NON_FINITE
    if min(b.open, b.high, b.low, b.close) <= 0:
        return NON_POSITIVE_PRICE
    if b.high < max(b.open, b.close) or b.low > min(b.open, b.close) or b.high < b.low:
        return HIGH_LOW_INCONSISTENT
    if b.volume < 0:
        return NEGATIVE_VOLUME
    if prev is not None and b.ts_ms == prev:
        return DUPLICATE_TIMESTAMP
    if prev is not None and b.ts_ms < prev:
        return OUT_OF_ORDER
    return None


any_float = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.sampled_from(
    [0.0, -0.0, -1.0, math.nan, math.inf, -math.inf]
)


@st.composite
def good_bar(draw: st.DrawFn, ts: int) -> Bar:
    lo = draw(st.floats(min_value=1e-6, max_value=1e6))
    o = lo * draw(st.floats(min_value=1.0, max_value=1.5))
    c = lo * draw(st.floats(min_value=1.0, max_value=1.5))
    h = max(o, c) * draw(st.floats(min_value=1.0, max_value=1.5))
    v = draw(st.floats(min_value=0.0, max_value=1e9))
    return Bar(ts, o, h, lo, c, v)


@st.composite
def mixed_bars(draw: st.DrawFn) -> list[Bar]:
    out: list[Bar] = []
    for _ in range(draw(st.integers(0, 30))):
        ts = draw(st.integers(0, 40))
        b = draw(good_bar(ts))
        if draw(st.booleans()):
            field = draw(st.sampled_from(["open", "high", "low", "close", "volume"]))
            values = {f: getattr(b, f) for f in Bar.__struct_fields__}
            values[field] = draw(any_float)
            b = Bar(**values)
        out.append(b)
    return out


@settings(max_examples=300, deadline=None)
@given(bars=mixed_bars(), last=st.none() | st.integers(-1, 20))
def test_matches_the_reference_on_any_mix(bars: list[Bar], last: int | None) -> None:
    accepted, rejected = validate_bars(bars, last)
    prev = last
    expected_ok: list[Bar] = []
    expected_bad: list[tuple[Bar, str]] = []
    for b in bars:
        reason = reference_reason(b, prev)
        if reason is None:
            expected_ok.append(b)
            prev = b.ts_ms
        else:
            expected_bad.append((b, reason))
    assert accepted == expected_ok
    assert [(id(b), r) for b, r in rejected] == [(id(b), r) for b, r in expected_bad]
    assert len(accepted) + len(rejected) == len(bars)
    stamps = [b.ts_ms for b in accepted]
    assert stamps == sorted(set(stamps))
    assert last is None or not stamps or stamps[0] > last
