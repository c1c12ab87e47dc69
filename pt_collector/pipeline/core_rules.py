"""Flow rules matched in the native engine's core: the rules compiled for it, and its routed batches' outputs.

With rules bound (`bind_rules`), the native engine matches every record as it decodes it (native/src/rules.rs:
the same keys and order as rules.Match, the same keep test as rules.Sample) and its batch says, per rule, how
many probes it matched and kept. The records of `pass` and `sample` rules stay encoded: per output (a topic's
records, a "slot") they are handed on as the batch's bytes, to a JSON lines file whole and to a Kafka sink per
source node (SourceGroups), with no Record object. Only the records of `histogram` rules are read back (the
aggregation runs in Python), and a `raw` rule takes its records' frames. functions.RuleEngine does the rest
exactly as for the pure engine's records; tests/test_core_rules.py holds the two byte-equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..codec.record import EncodedRecords, Record, json_decoder, msgpack_decoder
from ..kafka.message import Group, SourceGroups, array_header
from .rules import Prefixes, Rule, Sample

if TYPE_CHECKING:
    from .. import _native

try:
    from .. import _native as native_module
except ImportError:  # installed without a Rust toolchain: the pure engine alone
    native_module = None  # type: ignore[assignment]

Nets = list[tuple[int, int]] | None


@runtime_checkable
class RuleMatching(Protocol):
    """An engine that matches flow rules in its core as it decodes (the native one)."""

    def match_rules(self, rules: _native.Rules | None) -> None:
        """Match `rules` on every record decoded from now on (None: none)."""
        ...


@runtime_checkable
class CoreBatch(Protocol):
    """Records that are one native batch, whole (what the native engine hands on)."""

    @property
    def batch(self) -> _native.Batch: ...


def compile_rules(rules: Sequence[Rule], slot_of: dict[str, int], topic_of: Any, main_topic: str) -> _native.Rules:
    """The rules (in order, without the default) for the core; `slot_of` numbers the records topics."""
    spec = []
    for rule in rules:
        match, function = rule.match, rule.function
        records = function.name in ("pass", "sample")
        spec.append((
            _nets(match.src), _nets(match.sink), _nets(match.dst), _nets(match.segment), match.session_id,
            sorted(match.src_if_id) if match.src_if_id is not None else None, function.name,
            function.one_in if isinstance(function, Sample) else 0, slot_of[topic_of(rule)] if records else None,
        ))  # fmt: skip
    return native_module.Rules(spec, slot_of[main_topic])


def _nets(prefixes: Prefixes | None) -> Nets:
    if prefixes is None:
        return None
    return [(int(network.network_address), network.prefixlen) for network in prefixes.networks]


def routed_batch(records: Sequence[Record], rules: _native.Rules | None) -> _native.Batch | None:
    """The native batch behind `records` if these rules routed it whole, else None (match in Python)."""
    if rules is None or not isinstance(records, CoreBatch):
        return None
    batch = records.batch
    return batch if batch.rules_id == rules.id and batch.decoded == len(records) else None


def read_back(batch: _native.Batch, positions: list[int]) -> list[Record]:
    """Record objects of the batch's records at `positions` (msgspec, byte for byte the pure engine's)."""
    if not positions:
        return []
    data = batch.records_at(positions)
    if batch.format == "json":
        return json_decoder.decode_lines(data)
    return msgpack_decoder.decode(array_header(len(positions)) + data)


def slot_records(batch: _native.Batch, slot: int, count: int) -> Sequence[Record]:
    """Output `slot`'s records of a routed batch, still encoded."""
    return SlotLines(batch, slot, count) if batch.format == "json" else SlotMsgpack(batch, slot, count)


class SlotLines(EncodedRecords):
    """One output's records as JSON lines (a file takes them whole) and per source node (a Kafka sink)."""

    __slots__ = ("_batch", "_lines", "_slot")

    def __init__(self, batch: _native.Batch, slot: int, count: int) -> None:
        self._batch, self._slot, self._count, self._records = batch, slot, count, None
        self._lines: bytes | None = None

    @property
    def json_lines(self) -> bytes:  # type: ignore[override]
        if self._lines is None:
            self._lines = self._batch.slot_data(self._slot)[0]
        return self._lines

    def by_source(self) -> SourceGroups:
        return _groups(self._batch, self._slot)


class SlotMsgpack(Sequence[Record]):
    """One output's records as msgpack, per source node for a Kafka sink; Record objects only when asked for."""

    __slots__ = ("_batch", "_count", "_records", "_slot")

    def __init__(self, batch: _native.Batch, slot: int, count: int) -> None:
        self._batch, self._slot, self._count = batch, slot, count
        self._records: list[Record] | None = None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):  # type: ignore[no-untyped-def]  # int -> Record, slice -> list[Record]
        if self._records is None:
            data, count = self._batch.slot_data(self._slot)
            self._records = msgpack_decoder.decode(array_header(count) + data)
        return self._records[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    @property
    def data(self) -> bytes:
        """The records in input order, msgpack elements back to back."""
        return self._batch.slot_data(self._slot)[0]

    def by_source(self) -> SourceGroups:
        return _groups(self._batch, self._slot)


def _groups(batch: _native.Batch, slot: int) -> SourceGroups:
    return SourceGroups(batch.format, [Group(source, data, ends) for source, data, _, ends in batch.groups(True, slot)])


@runtime_checkable
class RulesInCore(Protocol):
    """A sink whose records go through flow rules that an engine's core can match (routing.RoutedSink)."""

    def core_rules(self) -> _native.Rules | None:
        """The rules compiled for the core (None: the native engine is not built here)."""
        ...


def bind_rules(engine: object, sink: object) -> None:
    """Before decoding into `sink`: an engine that can match rules in its core matches the sink's, or none."""
    if isinstance(engine, RuleMatching):
        engine.match_rules(sink.core_rules() if isinstance(sink, RulesInCore) else None)
