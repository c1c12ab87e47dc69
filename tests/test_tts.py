"""Midpoint time reconstruction (record-schema.md, "Midpoint times")."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pt_collector.codec.tts import midpoint_times, window_start

S = 10**9


def tts(ns: int, shift: int) -> int:
    return (ns % S) >> shift & 0xFF


def window_of(ns: int, shift: int) -> int:
    """The start of the window holding `ns`: its nanoseconds-of-second with the low bits cleared."""
    return ns // S * S + ((ns % S) >> shift << shift)


def test_unique_window_inside_the_span():
    # shift 18: windows of 262144 ns, one TTS wraps after 67108864 ns
    true = 5 * S + 123_456_789
    c = window_start(tts(true, 18), 18, true - 1_000_000, true + 1_000_000)
    assert c == window_of(true, 18)
    assert c <= true < c + (1 << 18)


def test_span_longer_than_one_wrap_is_ambiguous():
    true = 5 * S + 123_456_789
    assert window_start(tts(true, 18), 18, true - 70_000_000, true + 1_000) is None


def test_no_window_when_the_tts_cannot_occur():
    # shift 24: window starts x << 24 must stay below 1e9: x = 60 never happens
    assert window_start(60, 24, 5 * S, 5 * S + 900_000_000) is None


def test_upper_before_lower_has_no_candidate_unless_one_window_holds_both():
    assert window_start(1, 18, 10 * S, 9 * S) is None
    # the doc's rule: c <= upper and c + 2**S > lower, even when the clocks are out of step
    c = 10 * S + (7 << 18)
    assert window_start(7, 18, c + 100, c + 50) == c


def test_wrap_at_the_second_boundary():
    # a hop just after a new second starts: its TTS names ns 0.., the source was in the previous second
    src, hop, sink = 7 * S + 999_000_000, 8 * S + 300_000, 8 * S + 2_000_000
    c = window_start(tts(hop, 18), 18, src, sink)
    assert c is not None and c <= hop < c + (1 << 18) and c // S == 8


def test_truncated_last_window_of_a_second_ends_at_the_second():
    # shift 20: x=185 has a window at 185 << 20 + 3 << 28 = 999292928 ns that would run past 1e9
    shift, x = 20, 185
    start = 3 * S + (x << shift) + (3 << (shift + 8))
    assert start % S + (1 << shift) > S
    # lower lies in the next second, after the window's true end: no candidate in second 3
    assert window_start(x, shift, 4 * S + 10, 4 * S + 20) is None
    assert window_start(x, shift, start + 5, 4 * S) == start


def test_walk_from_the_sink_and_null_before_an_ambiguous_hop():
    shift = 18
    src = 100 * S
    hops = [src + 1_000_000, src + 2_000_000, src + 3_000_000]
    sink = src + 4_000_000
    times = midpoint_times([tts(h, shift) for h in hops], shift, src, sink)
    assert times == [window_of(h, shift) for h in hops]
    # the middle hop's TTS names no instant between the source and the next hop (a clock
    # out of step): no candidate, so it and every hop before it are None
    stamps = [tts(h, shift) for h in hops]
    stamps[1] = tts(src + 3_500_000, shift)
    assert midpoint_times(stamps, shift, src, sink) == [None, None, window_of(hops[2], shift)]
    # a path longer than one TTS wrap (67 ms at shift 18): nothing is sure
    assert midpoint_times([tts(h, shift) for h in hops], shift, src, src + 200_000_000) == [None, None, None]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 24),
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 2**40), min_size=1, max_size=12),
)
def test_times_are_window_starts_of_the_true_times_when_hops_are_close(shift, sec, gaps):
    """With every hop delay below one TTS wrap, reconstruction finds each true window."""
    wrap = 1 << (shift + 8)
    limit = min(wrap, S) // 2
    src = sec * S + 17
    true, t = [], src
    for gap in gaps:
        t += gap % limit
        true.append(t)
    sink = t + 1
    times = midpoint_times([tts(h, shift) for h in true], shift, src, sink)
    for got, real in zip(times, true, strict=True):
        if got is not None:  # ambiguity is allowed to give None, never a wrong time
            assert got <= real < got + (1 << shift)
            assert (got % S) >> shift & 0xFF == tts(real, shift)


def reference_window_start(tts: int, shift: int, lower: int, upper: int) -> int | None:
    """Every window of every second that meets [lower, upper], counted one by one."""
    width, period = 1 << shift, 1 << (shift + 8)
    found = []
    for sec in range(lower // S - 1, upper // S + 1):
        base = sec * S
        k = max(0, (lower - width - base - (tts << shift)) // period)  # windows before this end before lower
        while (n := (tts << shift) + k * period) < S and base + n <= upper:
            if min(base + n + width, base + S) > lower:
                found.append(base + n)
                if len(found) > 1:
                    return None
            k += 1
    return found[0] if len(found) == 1 else None


@settings(max_examples=2000, deadline=None)
@given(
    st.integers(0, 255),
    st.integers(0, 24),
    st.integers(0, 10**12),
    st.integers(-(10**6), 3 * 10**9),
)
def test_window_start_matches_counting_every_window(x, shift, lower, span):
    upper = lower + span
    assert window_start(x, shift, lower, upper) == reference_window_start(x, shift, lower, upper)


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, 255), st.integers(0, 24), st.integers(0, 10**12), st.integers(0, 10**7), st.integers(0, 10**7))
def test_window_start_near_second_boundaries(x, shift, sec, before, after):
    boundary = sec * S
    lower, upper = boundary - before, boundary + after
    assert window_start(x, shift, lower, upper) == reference_window_start(x, shift, lower, upper)
