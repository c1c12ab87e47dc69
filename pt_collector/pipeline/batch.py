"""Batching: records grouped per source node into Kafka messages.

Pure and synchronous; the caller passes the time in (seconds, any monotonic
clock). A source's batch closes when it holds `max_records`, when it would
encode past `max_bytes`, or once its oldest record has waited `linger_s`.
The byte limit is exact: a batch closes early on an estimate of its
encoded size, and `build_messages` halves any batch that still comes out
too large.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..codec.record import Record
from ..kafka.message import Message, build_messages

BYTES_MARGIN = 1.05  # close a little early rather than re-encode halves


class _Open:
    """A source node's batch being filled."""

    __slots__ = ("limit", "records", "since")

    def __init__(self, since: float, limit: int) -> None:
        self.records: list[Record] = []
        self.since = since
        self.limit = limit


class Batcher:
    """Groups records per source node (key = src.addr) into messages, in arrival order per source."""

    def __init__(self, fmt: str, max_records: int, max_bytes: int, linger_s: float) -> None:
        if max_records < 1 or max_bytes < 1 or linger_s < 0:
            raise ValueError("max_records and max_bytes must be positive, linger_s not negative")
        self.fmt = fmt
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.linger_s = linger_s
        self._open: dict[str, _Open] = {}  # in the order the batches opened, so oldest first
        self._record_bytes: dict[str, float] = {}  # last encoded size per record, per source
        self.held = 0  # records in open batches

    def add(self, records: Iterable[Record], now: float) -> list[Message]:
        """Take records; returns the messages of the batches they filled."""
        done: list[Message] = []
        open_batches = self._open
        for record in records:
            source = record.src.addr
            batch = open_batches.get(source)
            if batch is None:
                batch = open_batches[source] = _Open(now, self._limit(source))
            batch.records.append(record)
            self.held += 1
            if len(batch.records) >= batch.limit:
                done += self._close(source)
        return done

    def due(self, now: float) -> list[Message]:
        """Messages of the batches whose oldest record has lingered long enough."""
        deadline = now - self.linger_s
        due = []
        for source, batch in self._open.items():  # oldest first: batches open in time order
            if batch.since > deadline:
                break
            due.append(source)
        return [message for source in due for message in self._close(source)]

    def next_due(self) -> float | None:
        """When the oldest open batch is due, or None when none is open."""
        oldest = next(iter(self._open.values()), None)
        return None if oldest is None else oldest.since + self.linger_s

    def drain(self) -> list[Message]:
        """Messages of every open batch, now."""
        done: list[Message] = []
        for source in list(self._open):
            done += self._close(source)
        return done

    def _limit(self, source: str) -> int:
        per_record = self._record_bytes.get(source)
        if per_record is None:
            return self.max_records
        return max(1, min(self.max_records, int(self.max_bytes / (per_record * BYTES_MARGIN))))

    def _close(self, source: str) -> list[Message]:
        records = self._open.pop(source).records
        self.held -= len(records)
        messages = build_messages(records, self.fmt, self.max_bytes)
        self._record_bytes[source] = max(len(m.value) / m.count for m in messages)
        return messages
