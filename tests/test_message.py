"""Kafka message building and decoding: pure, both formats, the header contract, exact size limits."""

from __future__ import annotations

import msgspec
import pytest

from pt_collector import MessageError, Record, decode_message
from pt_collector.codec.decode import Decoder
from pt_collector.codec.generate import generate
from pt_collector.codec.record import from_json_lines
from pt_collector.codec.wire import LINKTYPE_RAW
from pt_collector.kafka.message import build_message, build_messages, encode_value, message_headers


def records_of(count: int, sources: int = 1, hops: int = 5) -> list[Record]:
    decoder = Decoder(tts_shift=18)
    return [decoder.decode(p, t, LINKTYPE_RAW) for t, p in generate(count, sources=sources, hops=hops)]


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_round_trip(fmt):
    records = records_of(10)
    message = build_message(records, fmt)
    assert message.key == b"2001:db8:1::1"
    assert message.count == 10
    assert message.headers == [("ptc-schema", b"1"), ("ptc-format", fmt.encode()), ("ptc-count", b"10")]
    assert decode_message(message.value, message.headers) == records


def test_json_value_is_json_lines_of_the_record_schema():
    records = records_of(3)
    value = build_message(records, "json").value
    assert value.endswith(b"\n") and value.count(b"\n") == 3
    assert from_json_lines(value) == records
    assert msgspec.json.decode(value.splitlines()[0])["src"]["addr"] == "2001:db8:1::1"


def test_msgpack_value_is_one_array():
    records = records_of(3)
    assert msgspec.msgpack.decode(build_message(records, "msgpack").value)[2]["sequence"] == records[2].sequence


def test_headers_as_mapping_or_pairs_with_memoryview_values():
    records = records_of(2)
    value = encode_value(records, "msgpack")
    headers = {"ptc-schema": b"1", "ptc-format": b"msgpack", "ptc-count": b"2"}
    assert decode_message(value, headers) == records
    assert decode_message(value, [(k, memoryview(v)) for k, v in headers.items()]) == records


def test_count_header_is_optional():
    records = records_of(2)
    assert decode_message(encode_value(records, "json"), message_headers("json", 2)[:2]) == records


@pytest.mark.parametrize(
    ("value", "headers", "error"),
    [
        (b"", None, "not a ptc schema 1 message (no ptc-schema header)"),
        (b"", [("ptc-schema", b"2"), ("ptc-format", b"json")], "not a ptc schema 1 message (schema 2)"),
        (b"", [("ptc-schema", b"1")], "unknown ptc-format ''"),
        (b"", [("ptc-schema", b"1"), ("ptc-format", b"avro")], "unknown ptc-format 'avro'"),
        (b'{"v": 1}\n', message_headers("json", 1), "bad json value"),
        (b"\x93\x01", message_headers("msgpack", 1), "bad msgpack value"),
        (b"not json\n", message_headers("json", 1), "bad json value"),
    ],
)
def test_not_a_ptc_message(value, headers, error):
    with pytest.raises(MessageError) as info:
        decode_message(value, headers)
    assert str(info.value).startswith(error)


def test_count_mismatch_is_an_error():
    records = records_of(3)
    with pytest.raises(MessageError, match="ptc-count says 4 records, the value holds 3"):
        decode_message(encode_value(records, "json"), message_headers("json", 4))


def test_empty_json_value_is_no_records():
    assert decode_message(b"", message_headers("json", 0)) == []


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
@pytest.mark.parametrize("max_bytes", [1, 700, 5_000, 20_000, 10**9])
def test_size_limit_is_exact_and_order_kept(fmt, max_bytes):
    records = records_of(40, hops=12) + records_of(40, hops=0)  # two record sizes
    messages = build_messages(records, fmt, max_bytes)
    assert [r for m in messages for r in decode_message(m.value, m.headers)] == records
    assert sum(m.count for m in messages) == len(records)
    for m in messages:
        assert len(m.value) <= max_bytes or m.count == 1
    if max_bytes == 10**9:
        assert len(messages) == 1
    if max_bytes == 1:
        assert len(messages) == len(records)


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        encode_value(records_of(1), "xml")
