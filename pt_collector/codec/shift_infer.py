"""Which TTS shift a source's midpoints stamp with, learnt from its probes (pure: no I/O).

The shift is not in the packet, but each probe tests it: under the right shift
every midpoint's TTS names a window that lies, in path order, between the
source's and the sink's full times; under a wrong one the same 8 bits name a
window somewhere else, and a probe whose delay is shorter than a TTS wrap of
that shift catches it. docs/decoding.md ("Learning the shift") says how sure a
verdict is and when there is none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .tts import MAX_SHIFT
from .wire import NS_PER_S

AUTO = "auto"  # --tts-shift auto, or "prefix" = "auto": learn the shift per source
SHIFTS = range(MAX_SHIFT + 1)
MIN_PROBES = 8  # a shift is judged on at least this many probes that could have caught it
ENOUGH_LOG10 = -6.0  # and fits them so that a wrong shift would have done so by chance at most once in 10**6
MISFIT_SHARE = 0.02  # probes a right shift may miss (a midpoint clock out of step), as a share
LEARN_PROBES = 64  # usable probes a verdict waits for at most (it comes earlier once all else is refuted)


def earliest(tts: int, shift: int, lower: int) -> int | None:
    """The earliest instant >= lower whose nanoseconds-of-second n have (n >> shift) & 0xFF == tts (None: never)."""
    first = tts << shift
    if first >= NS_PER_S:
        return None
    width, period = 1 << shift, 1 << (shift + 8)
    base = lower - lower % NS_PER_S
    n = lower - base
    k = max(0, -((first + width - 1 - n) // period))  # the first window of this second that ends after n
    if k <= (NS_PER_S - 1 - first) // period:
        return base + max(n, first + k * period)
    return base + NS_PER_S + first  # the next second's first window


def fits(tts_path: Sequence[int], shift: int, src_ns: int, sink_ns: int) -> bool:
    """Whether some times, one per midpoint in path order, in order between src_ns and sink_ns, have these TTS.

    Greedy from the source: each midpoint at the earliest instant its TTS allows after the one before.
    """
    t: int | None = src_ns
    for tts in tts_path:
        t = earliest(tts, shift, t)
        if t is None or t > sink_ns:
            return False
    return True


def chance_log10(hops: int, shift: int, delay_ns: int) -> float | None:
    """log10 of the chance that TTS unrelated to this shift fit a probe anyway (None: any would, no test).

    A delay of d ns holds at most d >> shift + 3 of the 256 TTS values (the ends, a second's
    boundary); each midpoint's value must be one of them (their order is not counted: an upper bound).
    """
    values = (delay_ns >> shift) + 3
    return None if values >= 256 else hops * math.log10(values / 256)


@dataclass(slots=True)
class Verdict:
    """What the probes say: the shift (None: cannot decide, `reason` says why), and how sure."""

    shift: int | None
    probes: int  # usable probes: a source time, a sink time, a midpoint
    fitted: int = 0  # of those that could have caught the shift, how many it fits
    tested: int = 0
    log10_chance: float = 0.0  # that a wrong shift fits them so well by chance
    runner_up: tuple[int, int, int] | None = None  # (shift, fitted, tested): the best of the others
    reason: str = ""
    alive: tuple[int, ...] = ()  # other shifts no probe has refuted yet

    def sureness(self) -> str:
        return f"fits {self.fitted} of {self.tested}; a wrong shift would by chance < 1e{math.floor(self.log10_chance)}"

    def next_best(self) -> str:
        if self.runner_up is None:
            return "no other shift could be tested"
        shift, fitted, tested = self.runner_up
        return f"next best {shift} fits {fitted} of {tested}"


@dataclass(slots=True)
class Evidence:
    """Per candidate shift: probes that could have caught it, how many it missed, the chance it fits the rest."""

    probes: int = 0
    offered: int = 0  # probes shown, usable or not
    tested: list[int] = field(default_factory=lambda: [0] * len(SHIFTS))
    misfits: list[int] = field(default_factory=lambda: [0] * len(SHIFTS))
    log10: list[float] = field(default_factory=lambda: [0.0] * len(SHIFTS))
    max_delay_ns: int = 0
    only: int | None = None  # weigh this shift alone (the check of a known one: cheap)

    def add(self, tts_path: Sequence[int], src_ns: int, sink_ns: int) -> bool:
        """Weigh one probe (its midpoints' TTS in path order, its source and sink times); False: it says nothing."""
        self.offered += 1
        delay = sink_ns - src_ns
        if not tts_path or delay < 0:
            return False
        self.probes += 1
        self.max_delay_ns = max(self.max_delay_ns, delay)
        for shift in SHIFTS if self.only is None else (self.only,):
            chance = chance_log10(len(tts_path), shift, delay)
            if chance is None:
                continue  # this delay spans a whole TTS wrap of this shift: every TTS fits
            self.tested[shift] += 1
            if fits(tts_path, shift, src_ns, sink_ns):
                self.log10[shift] += chance
            else:
                self.misfits[shift] += 1
        return True

    def fitted(self, shift: int) -> int:
        return self.tested[shift] - self.misfits[shift]

    def refutes(self, shift: int) -> bool:
        """Enough probes could have caught it, and too many did."""
        return self.tested[shift] >= MIN_PROBES and not self.holds(shift)

    def holds(self, shift: int) -> bool:
        """Not refuted: the probes it misses are few enough for clocks out of step."""
        return self.misfits[shift] <= MISFIT_SHARE * self.tested[shift]

    def sure_log10(self, shift: int) -> float:
        """log10 of the chance that a wrong shift fits this well: its fits' chances, times the ways to miss as many."""
        n, m = self.tested[shift], self.misfits[shift]
        ways = (math.lgamma(n + 1) - math.lgamma(m + 1) - math.lgamma(n - m + 1)) / math.log(10)
        return self.log10[shift] + ways

    def verdict(self, final: bool) -> Verdict | None:
        """The shift, once exactly one is sure and every other is refuted (or, `final`, sure at all); None: wait."""
        if not final and self.probes < MIN_PROBES:  # no shift tested on MIN_PROBES yet: none is sure, wait
            return None
        sure = [s for s in SHIFTS if self._sure(s)]
        alive = tuple(s for s in SHIFTS if self.tested[s] >= MIN_PROBES and self.holds(s) and s not in sure)
        if len(sure) == 1 and (final or not alive):
            return self._decided(sure[0], alive)
        if not final and self.probes < LEARN_PROBES:
            return None
        return Verdict(None, self.probes, reason=self._why_not(sure))

    def _sure(self, shift: int) -> bool:
        tested = self.tested[shift]
        return tested >= MIN_PROBES and self.holds(shift) and self.sure_log10(shift) <= ENOUGH_LOG10

    def _decided(self, shift: int, alive: tuple[int, ...]) -> Verdict:
        others = [s for s in SHIFTS if s != shift and self.tested[s]]
        best = max(others, key=lambda s: (self.fitted(s), -self.misfits[s]), default=None)
        runner_up = (best, self.fitted(best), self.tested[best]) if best is not None else None
        return Verdict(
            shift, self.probes, self.fitted(shift), self.tested[shift], self.sure_log10(shift), runner_up, alive=alive
        )

    def _why_not(self, sure: list[int]) -> str:
        if not self.probes:
            return "no probe has a source time, a sink time and a midpoint (too few hops, or bare probes)"
        if len(sure) > 1:
            return f"shifts {_ranges(sure)} all fit every probe (too short a delay: the TTS repeat the source's time)"
        untested = [s for s in SHIFTS if not self.tested[s]]
        weak = [s for s in SHIFTS if self.tested[s] and self.holds(s)]
        if weak:
            return f"too little evidence from {self.probes} probes: shifts {_ranges(weak)} fit them but not surely"
        if untested:
            delay = f"{self.max_delay_ns / 1e6:.3g} ms"
            return f"no shift fits: delays up to {delay} span a TTS wrap of shifts {_ranges(untested)}, the rest miss"
        return "no shift fits (clocks out of step?)"


def _ranges(shifts: Sequence[int]) -> str:
    """16, 18..24: runs of consecutive shifts."""
    runs: list[list[int]] = []
    for s in shifts:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return ", ".join(f"{r[0]}" if len(r) == 1 else f"{r[0]}..{r[-1]}" for r in runs)


# ---------------------------------------------------------------- per source: learn, then keep checking

CHECK_EVERY = 1024  # once learnt, about one probe in this many is weighed again
CHECK_PROBES = LEARN_PROBES  # usable probes per check window


@dataclass(slots=True)
class Source:
    """One source node's shift: configured (an int, or None for none) or learnt (`auto`), and the probes' say."""

    addr: str
    auto: bool
    shift: int | None  # the shift its hop times are made with
    origin: str  # where a fixed shift came from, for the warning
    evidence: Evidence = field(default_factory=Evidence)
    learning: bool = True  # every probe weighed until the first verdict, then a sample against `shift` alone
    seen: int = 0
    warned: bool = False  # a fixed shift: the warning was given (once per source)
    refuted: str = ""  # learning again: how the probes refuted the shift it had


class ShiftWatch:
    """Learns and checks the TTS shift of each source from the probes it is shown; says what it found.

    `observe` takes what the wire gives (each midpoint's TTS, the source's and the sink's times), `wants`
    says which probes to show it (all of a learning source, a sample of the others), `take_changes` the
    shifts to decode with from now on and `take_lines` what to tell the operator, one line each.

    Learning weighs every shift 0..24 on each probe until a verdict (Evidence.verdict). Checking then weighs
    the shift in use alone on a sample: when the probes refute it, an `auto` source learns afresh (its hop
    times null meanwhile) and a fixed one is warned about (once).
    """

    def __init__(self) -> None:
        self.sources: dict[str, Source] = {}
        self._changes: dict[str, int | None] = {}
        self._lines: list[str] = []

    def track(self, addr: str, shift: int | None, auto: bool, origin: str = "") -> Source:
        source = self.sources[addr] = Source(addr, auto, None if auto else shift, origin)
        return source

    def learning(self) -> bool:
        return any(source.learning for source in self.sources.values())

    def wants(self, source: Source) -> bool:
        source.seen += 1
        return source.learning or (not source.warned and source.seen % CHECK_EVERY == 0)

    def observe(self, source: Source, tts_path: Sequence[int], src_ns: int, sink_ns: int) -> None:
        evidence = source.evidence
        evidence.add(tts_path, src_ns, sink_ns)
        enough = evidence.probes >= LEARN_PROBES or evidence.offered >= 4 * LEARN_PROBES
        if source.learning:
            verdict = evidence.verdict(final=enough)
            if verdict is not None:
                self._learnt(source, verdict, evidence)
        elif source.shift is not None and evidence.refutes(source.shift):
            self._refuted(source, evidence)
        elif enough:
            verdict = evidence.verdict(final=True) if source.shift is None else None
            if verdict is not None and verdict.shift is not None:
                self._learnt(source, verdict, evidence, sampled=True)  # an `auto` source undecided until now
            source.evidence = self._check_evidence(source)

    def finish(self) -> None:
        """The input ended: a source still learning gets its verdict from what it showed."""
        for source in self.sources.values():
            if source.learning:
                self._learnt(source, source.evidence.verdict(final=True), source.evidence)

    def take_changes(self) -> dict[str, int | None]:
        changes, self._changes = self._changes, {}
        return changes

    def take_lines(self) -> list[str]:
        lines, self._lines = self._lines, []
        return lines

    # ---------------------------------------------------------------- verdicts

    def _learnt(self, source: Source, verdict: Verdict, evidence: Evidence, sampled: bool = False) -> None:
        source.learning = False
        if not source.auto:
            if verdict.shift is not None and verdict.shift != source.shift:
                self._warn(source, f"{verdict.shift} {verdict.sureness()}")
            elif source.shift is not None and evidence.refutes(source.shift):
                shift = source.shift
                self._warn(source, f"{shift} fits {evidence.fitted(shift)} of {evidence.tested[shift]}")
        else:
            self._say_learnt(source, verdict, sampled)
        source.evidence = self._check_evidence(source)

    def _say_learnt(self, source: Source, verdict: Verdict, sampled: bool) -> None:
        head, was = f"TTS shift of {source.addr}:", source.refuted
        source.refuted = ""
        if verdict.shift is None:
            again = f" ({was})" if was else ""
            why = f"cannot decide from {verdict.probes} probes: {verdict.reason}"
            self._lines.append(f"{head} {why}; hop times null{again}")
            return
        how = f"{verdict.sureness()}; {verdict.next_best()}"
        probes = f"{verdict.probes} sampled probes" if sampled else f"{verdict.probes} probes"
        now = f"now {verdict.shift} ({was})" if was else f"{verdict.shift}"
        self._lines.append(f"{head} {now}, learnt from {probes} ({how})")
        self._set(source, verdict.shift)

    def _refuted(self, source: Source, evidence: Evidence) -> None:
        shift = source.shift
        assert shift is not None
        fitted = f"{shift} fits {evidence.fitted(shift)} of {evidence.tested[shift]} sampled probes"
        if not source.auto:
            self._warn(source, fitted)
            source.evidence = Evidence(only=shift)
            return
        source.refuted = f"was {shift}: {fitted}"
        self._set(source, None)  # null times while it learns again, rather than wrong ones
        source.learning, source.evidence = True, Evidence()

    def _warn(self, source: Source, shown: str) -> None:
        if source.warned:
            return
        source.warned = True
        self._lines.append(
            f"warning: {source.origin} {source.shift} disagrees with the probes of {source.addr}: {shown}; "
            f"its hop times are wrong (--tts-shift auto learns the shift)"
        )

    def _set(self, source: Source, shift: int | None) -> None:
        source.shift = self._changes[source.addr] = shift

    @staticmethod
    def _check_evidence(source: Source) -> Evidence:
        """What the check weighs: the shift in use alone; all of them for a source with none."""
        return Evidence(only=source.shift)
