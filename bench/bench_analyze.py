"""`ptc analyze` speed: probes/s for one and two instances next to kcat reading the same topic, and the latency
from probe to window result, on a real broker, in one run.

    python bench/bench_analyze.py [--count 200000] [--brokers HOST:PORT]

Without --brokers it starts its own broker (scripts/kafka.sh, as bench_kafka.py).
--count generated probes (16 sources, 5 MCDs, 1 us apart on the sources' clocks,
so 10 windows of 20 ms per source with --window 0.02) go into a new 4-partition
topic keyed by source, in messages of 500 records (JSON), then:

  kcat         `kcat -C -e` of every message of the topic (the baseline: reading only)
  1 instance   `ptc analyze` (exactly-once) from its start until the last window result
               is committed in the output topic (start-up included; `start-up` alone: the
               same over a topic of one probe per source)
  2 instances  the same with two instances in one group
  latency      one instance fed live at --rate probes/s with the wall clock as the sources'
               clock, windows of 1 s, grace 0.2 s: for each window result, its arrival time
               minus the window's end plus grace (the earliest it could close)
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import msgspec  # noqa: E402
from bench_kafka import broker  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from pt_collector.decode import Decoder  # noqa: E402
from pt_collector.generate import generate  # noqa: E402
from pt_collector.kinds import decode_any_message  # noqa: E402
from pt_collector.message import build_message  # noqa: E402
from pt_collector.record import Record  # noqa: E402
from pt_collector.wire import LINKTYPE_RAW  # noqa: E402

SOURCES, BATCH, PARTITIONS = 16, 500, 4
NS = 1_000_000


def records(count: int) -> list[Record]:
    decoder = Decoder(tts_shift=18)
    return [decoder.decode(p, t, LINKTYPE_RAW) for t, p in generate(count, sources=SOURCES, interval_ns=1000)]


def closers(rs: list[Record], after_ns: int) -> list[Record]:
    last = {r.src.addr: r for r in rs}
    return [
        msgspec.structs.replace(r, src=msgspec.structs.replace(r.src, time_ns=r.src.time_ns + after_ns))
        for r in last.values()
    ]


def new_topic(brokers: str) -> str:
    name = f"bench-analyze-{uuid.uuid4().hex[:8]}"
    for future in AdminClient({"bootstrap.servers": brokers}).create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        future.result(30)
    return name


def produce(brokers: str, topic: str, rs: list[Record]) -> int:
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "message.max.bytes": 4_000_000})
    by_source: dict[str, list[Record]] = defaultdict(list)
    for r in rs:
        by_source[r.src.addr].append(r)
    messages = 0
    for batch in by_source.values():
        for i in range(0, len(batch), BATCH):
            m = build_message(batch[i : i + BATCH], "json")
            producer.produce(topic, m.value, m.key, headers=m.headers)
            producer.poll(0)
            messages += 1
    producer.flush(60)
    return messages


def kcat(brokers: str, topic: str, messages: int) -> float:
    start = time.monotonic()
    out = subprocess.run(["kcat", "-C", "-b", brokers, "-t", topic, "-e", "-q", "-f", "%o\n"], capture_output=True)
    elapsed = time.monotonic() - start
    assert out.stdout.count(b"\n") == messages, out.stderr
    return elapsed


def output_reader(brokers: str, topic: str) -> Consumer:
    settings = {"bootstrap.servers": brokers, "group.id": f"b-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    consumer = Consumer({**settings, "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    return consumer


def start(brokers: str, topic: str, out: str, group: str, state: Path, window: float, grace: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pt_collector.cli", "analyze", "--brokers", brokers, "--topic", topic,
         "--output-topic", out, "--events-topic", f"{out}-events", "--group", group, "--state-dir", str(state),
         "--window", str(window), "--grace", str(grace)],
        stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def analyze(brokers: str, topic: str, instances: int, windows: int, tmp: Path) -> float:
    """Seconds from starting the instances until `windows` path histograms are committed."""
    out, group = f"out-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    begin = time.monotonic()
    procs = [start(brokers, topic, out, group, tmp / f"{group}-{i}", 0.02, 0.0) for i in range(instances)]
    reader = output_reader(brokers, out)
    seen = 0
    try:
        while seen < windows and time.monotonic() - begin < 600:
            m = reader.poll(0.2)
            if m is not None and not m.error():
                seen += len(decode_any_message(m.value(), m.headers()))
        return time.monotonic() - begin
    finally:
        reader.close()
        for p in procs:
            p.terminate()
            p.wait(60)


def latency(brokers: str, rate: int, seconds: int, tmp: Path) -> list[float]:
    topic = new_topic(brokers)
    out = f"out-{uuid.uuid4().hex[:8]}"
    proc = start(brokers, topic, out, f"g-{uuid.uuid4().hex[:8]}", tmp / "latency", 1.0, 0.2)
    time.sleep(8)  # start-up and group join, not part of the latency
    template = records(SOURCES)
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    reader = output_reader(brokers, out)
    delays: list[float] = []
    sequence = 0
    try:
        end = time.time() + seconds
        while time.time() < end:
            sequence += 1
            now_ns = time.time_ns()
            for r in template:
                r = msgspec.structs.replace(
                    r, sequence=sequence & 0xFFFF, src=msgspec.structs.replace(r.src, time_ns=now_ns)
                )
                m = build_message([r], "json")
                producer.produce(topic, m.value, m.key, headers=m.headers)
            producer.poll(0)
            delays.extend(_arrivals(reader))
            time.sleep(SOURCES / rate)
        delays.extend(_arrivals(reader, wait=3.0))
    finally:
        reader.close()
        proc.terminate()
        proc.wait(60)
    return delays


def _arrivals(reader: Consumer, wait: float = 0.0) -> list[float]:
    got = []
    deadline = time.monotonic() + wait
    while True:
        m = reader.poll(0.0 if not wait else 0.1)
        if m is None:
            if time.monotonic() >= deadline:
                return got
            continue
        if m.error():
            continue
        now = time.time()
        for h in decode_any_message(m.value(), m.headers()):
            got.append(now - (h.start_ns + h.interval_ns) / 1e9 - 0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--brokers")
    parser.add_argument("--rate", type=int, default=2000, help="probes/s for the latency run")
    parser.add_argument("--seconds", type=int, default=15, help="length of the latency run")
    args = parser.parse_args()
    rs = records(args.count)
    windows = len({(r.src.addr, r.src.time_ns // (20 * NS)) for r in rs})
    with broker(args.brokers) as brokers, tempfile.TemporaryDirectory() as tmp:
        topic = new_topic(brokers)
        messages = produce(brokers, topic, rs + closers(rs, 100 * NS))
        print(
            f"# ptc analyze, {platform.node()}, {datetime.date.today()}: {args.count:,} probes, {messages:,} messages"
        )
        small = new_topic(brokers)
        produce(brokers, small, rs[:SOURCES] + closers(rs[:SOURCES], 100 * NS))
        startup = analyze(brokers, small, 1, SOURCES, Path(tmp))
        print(f"start-up      {startup:6.2f} s  (to the first {SOURCES} window results of a 32-probe topic)")
        elapsed = kcat(brokers, topic, messages)
        print(f"kcat          {elapsed:6.2f} s  {args.count / elapsed:>10,.0f} probes/s")
        for n in (1, 2):
            elapsed = analyze(brokers, topic, n, windows, Path(tmp))
            print(f"{n} instance(s) {elapsed:6.2f} s  {args.count / elapsed:>10,.0f} probes/s (start-up included)")
        delays = sorted(latency(brokers, args.rate, args.seconds, Path(tmp)))
        if delays:
            median = statistics.median(delays)
            print(f"latency: {len(delays)} window results, after window end + grace: median {median:.3f} s, ", end="")
            print(f"max {delays[-1]:.3f} s ({args.rate} probes/s, windows of 1 s, grace 0.2 s)")


if __name__ == "__main__":
    main()
