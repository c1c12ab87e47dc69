"""Sinks: where batches of records go. One method does the work: write(batch)."""

from __future__ import annotations

from typing import BinaryIO, Protocol

from .record import Record, to_json_lines


class Sink(Protocol):
    def write(self, records: list[Record]) -> None: ...

    def flush(self) -> None: ...


class JsonLinesSink:
    """Records as JSON lines (record schema v1) on a binary stream."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def write(self, records: list[Record]) -> None:
        self._stream.write(to_json_lines(records))

    def flush(self) -> None:
        self._stream.flush()


class ListSink:
    """Keeps every record in memory (tests, library use)."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def write(self, records: list[Record]) -> None:
        self.records.extend(records)

    def flush(self) -> None:
        pass
