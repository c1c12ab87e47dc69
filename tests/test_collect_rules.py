"""`ptc collect` with flow rules, over a real veth pair into the real broker: every function, live."""

from __future__ import annotations

from test_collect_veth import Collector, expected_records, without_capture_time
from test_deploy import probe_frames
from test_kafka_delivery import new_topic
from test_routing import read_messages

from pt_collector.codec.record import PathHistogram
from pt_collector.kafka.kinds import decode_any_message
from pt_collector.kafka.message import decode_message

PER_SOURCE = 200


def test_every_function_live(veth, kafka_broker, tmp_path):
    topics = {name: new_topic(kafka_broker) for name in ("main", "sample", "raw", "hist")}
    config = tmp_path / "ptc.toml"
    config.write_text(f"""
[[rules]]
name = "sampled"
src = "2001:db8:1::/48"
function = "sample"
one_in = 4
topic = "{topics["sample"]}"

[[rules]]
name = "frames"
src = "2001:db8:2::/48"
function = "raw"
topic = "{topics["raw"]}"

[[rules]]
name = "hist"
src = "2001:db8:3::/48"
function = "histogram"
interval_ms = 1000
topic = "{topics["hist"]}"

[[rules]]
name = "test-traffic"
src = "2001:db8:4::/48"
function = "drop"
""")  # the fifth source matches no rule: passed to the main topic
    frames = probe_frames(5 * PER_SOURCE, sources=5, seed=21)
    expected = without_capture_time(expected_records(frames))
    of = lambda n: [(r, f) for r, f in zip(expected, frames, strict=True) if r.src.addr == f"2001:db8:{n}::1"]  # noqa: E731
    collector = Collector(
        "--iface", veth.rx_iface, "--topic", topics["main"], "--brokers", kafka_broker, "--linger-ms", "20",
        config=config,
    )  # fmt: skip
    collector.wait_for(lambda line: "kernel" in line)
    veth.send(frames)
    collector.frames_seen(len(frames))
    assert collector.stop() == 0
    sampled = [r for m in read_messages(kafka_broker, topics["sample"], 1) for r in decode_message(m.value, m.headers)]
    assert without_capture_time(sampled) == [r for r, _ in of(1) if r.sequence % 4 == 0]  # exactly 1 in 4
    raw = read_messages(kafka_broker, topics["raw"], PER_SOURCE)
    assert [m.value for m in raw] == [f for _, f in of(2)]  # the exact frames, one message each
    assert all(len(m.key) == 8 and 1.6e15 < int.from_bytes(m.key, "big") < 4e15 for m in raw)  # epoch µs
    histograms = [
        h for m in read_messages(kafka_broker, topics["hist"], 1) for h in decode_any_message(m.value, m.headers)
    ]
    assert all(isinstance(h, PathHistogram) for h in histograms)
    assert sum(h.count for h in histograms) == PER_SOURCE  # every probe of the path, in some interval
    passed = [r for m in read_messages(kafka_broker, topics["main"], 1) for r in decode_message(m.value, m.headers)]
    assert without_capture_time(passed) == [r for r, _ in of(5)]
    assert {r.src.addr for r in passed} == {"2001:db8:5::1"}  # source 4's: dropped
