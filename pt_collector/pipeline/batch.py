"""Batching: records grouped per source node into Kafka messages.

Pure and synchronous; the caller passes the time in (seconds, any monotonic
clock). A source's batch closes when it holds `max_records`, when it would
encode past `max_bytes`, or once its oldest record has waited `linger_s`.
The byte limit is exact: a batch closes early on an estimate of its
encoded size, and `build_messages` halves any batch that still comes out
too large.

Records that arrive already encoded per source node (kafka.message.SourceGroups,
from the native engine, in the batcher's format) take the same way with
no Record object: a batch holds cuts of their bytes, closes by the same
rules, and its messages are the bytes build_messages would write for the
same records (group_messages).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..codec.record import Record
from ..kafka.message import Group, Message, SourceGroups, build_messages, encode_group, group_messages

BYTES_MARGIN = 1.05  # close a little early rather than re-encode halves


class _Open:
    """A source node's batch being filled: Record objects, or (once encoded records came) cuts of encoded bytes."""

    __slots__ = ("limit", "n", "parts", "records", "since")

    def __init__(self, since: float, limit: int) -> None:
        self.records: list[Record] = []
        self.parts: list[Group] = []  # encoded records, when some came so: then every record goes here
        self.n = 0  # records in parts
        self.since = since
        self.limit = limit

    def encoded(self, source: str, fmt: str) -> None:
        """From now on, encoded: the Record objects so far become the first part."""
        if self.records:
            self.parts.append(encode_group(source, self.records, fmt))
            self.n += len(self.records)
            self.records = []

    def take(self, part: Group) -> None:
        self.parts.append(part)
        self.n += len(part)


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
        """Take records (or SourceGroups); returns the messages of the batches they filled."""
        if isinstance(records, SourceGroups) and records.fmt == self.fmt:
            return self._add_groups(records, now)
        done: list[Message] = []
        open_batches = self._open
        for record in records:
            source = record.src.addr
            batch = open_batches.get(source)
            if batch is None:
                batch = open_batches[source] = _Open(now, self._limit(source))
            if batch.parts:  # rare: Record objects after encoded ones (a format the engine did not encode)
                batch.take(encode_group(source, [record], self.fmt))
            else:
                batch.records.append(record)
            self.held += 1
            if len(batch.records) + batch.n >= batch.limit:
                done += self._close(source)
        return done

    def _add_groups(self, records: SourceGroups, now: float) -> list[Message]:
        """Encoded records, a source node at a time: each batch takes what fits its limit, as add does per record."""
        done: list[Message] = []
        open_batches = self._open
        for group in records.groups:
            source, at, end = group.source, 0, len(group)
            while at < end:
                batch = open_batches.get(source)
                if batch is None:
                    batch = open_batches[source] = _Open(now, self._limit(source))
                batch.encoded(source, self.fmt)
                take = min(end - at, batch.limit - batch.n)
                batch.take(group.cut(at, at + take) if take < end else group)
                at += take
                self.held += take
                if batch.n >= batch.limit:
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
        batch = self._open.pop(source)
        self.held -= len(batch.records) + batch.n
        messages = _messages(batch, self.fmt, self.max_bytes)
        self._record_bytes[source] = max(m.nbytes / m.count for m in messages)
        return messages


def _messages(batch: _Open, fmt: str, max_bytes: int) -> list[Message]:
    if batch.parts:
        return group_messages(batch.parts, fmt, max_bytes)
    return build_messages(batch.records, fmt, max_bytes)
