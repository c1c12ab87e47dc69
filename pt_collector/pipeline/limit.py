"""`-c N`: a sink that takes the first N records and then stops the run, as `tcpdump -c` does.

Records decoded past the count in the batch that reaches it are not passed on: they are counted
(`beyond`), so that the summary can say so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..capture.pcap import Frame
from ..codec.record import EncodedRecords, Record
from .sinks import Sink, hand_over


class LimitReached(Exception):
    """The count was reached: the replay stops reading (the sink is flushed by the caller)."""


class LimitedSink:
    """Passes on the first `limit` records to `inner`; then calls `reached` (live capture: stop the worker), or
    raises LimitReached when there is none (replay: stop reading the files)."""

    def __init__(self, inner: Sink, limit: int, reached: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.limit = limit
        self.reached = reached
        self.passed = 0  # records handed on
        self.beyond = 0  # records decoded past the count, not handed on

    @property
    def wants_frames(self) -> bool:
        return self.inner.wants_frames

    @property
    def held(self) -> int:
        return self.inner.held

    async def write(self, records: Sequence[Record]) -> None:
        await self._take(records, None)

    async def write_frames(self, records: Sequence[Record], frames: list[Frame]) -> None:
        await self._take(records, frames)

    async def flush(self) -> None:
        await self.inner.flush()

    async def close(self, timeout_s: float | None = None) -> None:
        await self.inner.close(timeout_s)

    async def _take(self, records: Sequence[Record], frames: list[Frame] | None) -> None:
        room = max(0, self.limit - self.passed)
        take = min(room, len(records))
        self.beyond += len(records) - take
        if take:
            self.passed += take
            await hand_over(self.inner, head(records, take), frames[:take] if frames is not None else None)
        if self.passed >= self.limit:
            if self.reached is None:
                raise LimitReached
            self.reached()


def head(records: Sequence[Record], n: int) -> Sequence[Record]:
    """The first `n` records; encoded ones (the native engine's) stay encoded, cut after their n-th line."""
    if n >= len(records):
        return records
    if isinstance(records, EncodedRecords):
        data, end = bytes(records.json_lines), -1  # (the native engine's lines are a view of its batch)
        for _ in range(n):
            end = data.index(b"\n", end + 1)
        return EncodedRecords(data[: end + 1], n)
    return records[:n]
