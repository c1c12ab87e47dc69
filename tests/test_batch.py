"""Batching per source node: count, byte and linger limits, order, with the clock passed in."""

from __future__ import annotations

import pytest

from pt_collector import Decoder, Record, decode_message
from pt_collector.codec.generate import generate
from pt_collector.codec.wire import LINKTYPE_RAW
from pt_collector.kafka.message import Message
from pt_collector.pipeline.batch import Batcher


def records_of(count: int, sources: int) -> list[Record]:
    decoder = Decoder(tts_shift=18)
    return [decoder.decode(p, t, LINKTYPE_RAW) for t, p in generate(count, sources=sources)]


def unpack(messages: list[Message]) -> list[Record]:
    return [r for m in messages for r in decode_message(m.value, m.headers)]


def by_source(records: list[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.src.addr, []).append(r)
    return groups


def test_messages_hold_one_source_and_keep_its_order():
    records = records_of(400, sources=5)
    batcher = Batcher("json", max_records=30, max_bytes=10**9, linger_s=1.0)
    messages = batcher.add(records[:250], now=0.0) + batcher.add(records[250:], now=0.1) + batcher.drain()
    for m in messages:
        addrs = {r.src.addr for r in decode_message(m.value, m.headers)}
        assert addrs == {m.key.decode()}
    assert by_source(unpack(messages)) == by_source(records)
    assert sorted(m.count for m in messages)[-1] == 30
    assert batcher.held == 0


def test_a_batch_closes_at_max_records():
    records = records_of(10, sources=1)
    batcher = Batcher("msgpack", max_records=4, max_bytes=10**9, linger_s=1.0)
    assert [m.count for m in batcher.add(records, now=0.0)] == [4, 4]
    assert batcher.held == 2
    assert [m.count for m in batcher.drain()] == [2]


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_byte_limit_holds_and_the_estimate_closes_batches_early(fmt):
    records = records_of(6000, sources=3)
    max_bytes = 20_000
    batcher = Batcher(fmt, max_records=1000, max_bytes=max_bytes, linger_s=1.0)
    messages = []
    for i in range(0, len(records), 100):
        messages += batcher.add(records[i : i + 100], now=0.0)
    messages += batcher.drain()
    assert all(len(m.value) <= max_bytes for m in messages)
    assert by_source(unpack(messages)) == by_source(records)
    # split batches and the size estimate after them fill messages to most of the limit
    assert sum(len(m.value) for m in messages) / len(messages) > 0.85 * max_bytes


def test_linger_closes_old_batches_only():
    a, b = records_of(2, sources=2)
    batcher = Batcher("json", max_records=100, max_bytes=10**9, linger_s=0.5)
    assert batcher.next_due() is None
    assert batcher.add([a], now=10.0) == []
    assert batcher.add([b], now=10.3) == []
    assert batcher.next_due() == 10.5
    assert batcher.due(now=10.49) == []
    due = batcher.due(now=10.5)
    assert [m.key for m in due] == [a.src.addr.encode()]
    assert batcher.next_due() == pytest.approx(10.8)
    assert [m.key for m in batcher.due(now=11.0)] == [b.src.addr.encode()]
    assert batcher.next_due() is None and batcher.held == 0


def test_a_source_batch_reopens_after_closing():
    records = records_of(6, sources=1)
    batcher = Batcher("json", max_records=100, max_bytes=10**9, linger_s=0.0)
    batcher.add(records[:3], now=1.0)
    assert [m.count for m in batcher.due(now=1.0)] == [3]
    batcher.add(records[3:], now=2.0)
    assert unpack(batcher.drain()) == records[3:]


@pytest.mark.parametrize(("max_records", "max_bytes", "linger_s"), [(0, 1, 0.0), (1, 0, 0.0), (1, 1, -1.0)])
def test_bad_limits(max_records, max_bytes, linger_s):
    with pytest.raises(ValueError):
        Batcher("json", max_records, max_bytes, linger_s)


# ---------------------------------------------------------------- records already encoded (the native engine's)

native = pytest.importorskip("pt_collector._native", reason="pt_collector._native is not built (no Rust toolchain)")


def engine_batches(count: int, sources: int, fmt: str, step: int = 100) -> tuple[list, list]:
    """The same frames through both engines, `step` frames a batch: (native records, pure records) per batch."""
    from pt_collector.pipeline.engine import NativeEngine, PythonEngine

    frames = list(generate(count, sources=sources))
    native_engine, pure = NativeEngine(18, fmt=fmt), PythonEngine(Decoder(tts_shift=18))
    chunks = [frames[i : i + step] for i in range(0, len(frames), step)]
    return (
        [native_engine.decode_batch(c, LINKTYPE_RAW).records for c in chunks],
        [list(pure.decode_batch(c, LINKTYPE_RAW).records) for c in chunks],
    )


def per_key(messages: list[Message]) -> dict[bytes, list[tuple[bytes, list, int]]]:
    keyed: dict[bytes, list[tuple[bytes, list, int]]] = {}
    for m in messages:
        keyed.setdefault(m.key, []).append((m.value, m.headers, m.count))
    return keyed


def run_batcher(batches: list, fmt: str, max_records: int, max_bytes: int, linger_s: float = 1.0) -> list[Message]:
    batcher = Batcher(fmt, max_records=max_records, max_bytes=max_bytes, linger_s=linger_s)
    messages = []
    for i, batch in enumerate(batches):
        now = i * 0.01
        messages += batcher.add(batch, now) + batcher.due(now)
    return messages + batcher.drain()


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize(
    ("max_records", "max_bytes", "linger_s"),
    [(30, 10**9, 1.0), (1000, 20_000, 1.0), (1000, 4_000, 1.0), (7, 10**9, 0.05), (1, 10**9, 1.0)],
)
def test_encoded_records_make_the_same_messages_as_records(fmt, max_records, max_bytes, linger_s):
    encoded, records = engine_batches(3000, sources=5, fmt=fmt)
    groups = [batch.by_source() for batch in encoded]
    from_records = run_batcher(records, fmt, max_records, max_bytes, linger_s)
    from_groups = run_batcher(groups, fmt, max_records, max_bytes, linger_s)
    assert per_key(from_groups) == per_key(from_records)  # same cuts, same bytes, same headers, per source node
    assert all(len(m.value) <= max_bytes or m.count == 1 for m in from_groups)
    assert sum(m.count for m in from_groups) == 3000


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_records_and_encoded_records_mix_in_one_batcher(fmt):
    encoded, records = engine_batches(2000, sources=3, fmt=fmt)
    mixed = [e.by_source() if i % 2 else r for i, (e, r) in enumerate(zip(encoded, records, strict=True))]
    assert per_key(run_batcher(mixed, fmt, 45, 30_000)) == per_key(run_batcher(records, fmt, 45, 30_000))


def test_encoded_records_in_another_format_are_read_back_as_records():
    encoded, records = engine_batches(500, sources=3, fmt="json")
    groups = [batch.by_source() for batch in encoded]
    assert per_key(run_batcher(groups, "msgpack", 40, 10**9)) == per_key(run_batcher(records, "msgpack", 40, 10**9))


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_a_slice_of_source_groups_keeps_them_encoded_and_in_order_per_source(fmt):
    (batch,), (records,) = engine_batches(300, sources=4, fmt=fmt, step=300)
    groups = batch.by_source()
    assert list(batch) == records  # the native records read back: the pure engine's, in arrival order
    cuts = [groups[0:1], groups[1:77], groups[77:77], groups[77:250], groups[250:]]
    assert [len(c) for c in cuts] == [1, 76, 0, 173, 50]
    assert all(c.fmt == fmt and all(g.data is not None for g in c.groups) for c in cuts)
    assert [r for c in cuts for r in c] == list(groups)
    assert by_source(list(groups)) == by_source(records)
