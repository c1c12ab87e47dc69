"""Sinks: where batches of records go. One method does the work: write(batch)."""

from __future__ import annotations

from typing import BinaryIO, Protocol

from .record import Record, to_json_lines


class Sink(Protocol):
    """Takes batches of records; `flush` returns once everything written is delivered."""

    async def write(self, records: list[Record]) -> None: ...

    async def flush(self) -> None: ...


class JsonLinesSink:
    """Records as JSON lines (record schema v1) on a binary stream, one write and flush per batch."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    async def write(self, records: list[Record]) -> None:
        self._stream.write(to_json_lines(records))
        self._stream.flush()  # a reader (tail -f, a pipe) sees whole batches as they come

    async def flush(self) -> None:
        self._stream.flush()


class ListSink:
    """Keeps every record in memory (tests, library use)."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    async def write(self, records: list[Record]) -> None:
        self.records.extend(records)

    async def flush(self) -> None:
        pass
