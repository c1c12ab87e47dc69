"""Midpoint time reconstruction from truncated timestamps (TTS).

record-schema.md "Midpoint times": exact integer arithmetic, walking from the
sink back to the source; a hop whose window is not unique gets None, and so
does every hop before it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .wire import NS_PER_S

MAX_SHIFT = 24  # TTS window start x << shift must stay inside a 32-bit nanosecond field


def window_start(tts: int, shift: int, lower: int, upper: int) -> int | None:
    """The one window start c for `tts` with c <= upper whose window ends after lower.

    A window is the instants whose nanoseconds-of-second n have
    (n >> shift) & 0xFF == tts: it starts at n = tts << shift + k * 2**(shift+8)
    and ends 2**shift later or at the end of the second, whichever is first.
    None when no window or more than one fits. Windows end in the order they
    start, so only the latest start <= upper and the one before it matter.
    """
    first = tts << shift
    if first >= NS_PER_S:
        return None
    width = 1 << shift
    period = 1 << (shift + 8)
    last_k = (NS_PER_S - 1 - first) // period  # the last window of a second
    base = upper - upper % NS_PER_S
    n = upper - base
    if n >= first:
        k = (n - first) // period
    else:
        base, k = base - NS_PER_S, last_k
    latest = base + first + k * period
    if min(latest + width, base + NS_PER_S) <= lower:
        return None
    # the window before: earlier in this second, or the last one of the second before
    before_end = latest - period + width if k else min(base - NS_PER_S + first + last_k * period + width, base)
    return None if before_end > lower else latest


def midpoint_times(tts_path: Sequence[int], shift: int, src_ns: int, sink_ns: int) -> list[int | None]:
    """Times for hops in path order, reconstructed from the sink backwards."""
    times: list[int | None] = [None] * len(tts_path)
    upper = sink_ns
    for i in range(len(tts_path) - 1, -1, -1):
        c = window_start(tts_path[i], shift, src_ns, upper)
        if c is None:
            break
        times[i] = upper = c
    return times
