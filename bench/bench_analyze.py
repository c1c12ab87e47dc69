"""`ptc analyze` speed: probes/s for one and two instances next to kcat reading the same topic, and the latency
from probe to window result, on a real broker, in one run.

    python bench/bench_analyze.py [--count 200000] [--brokers HOST:PORT]

Without --brokers it starts its own broker (scripts/kafka.sh, as bench_kafka.py).
--count generated probes (16 sources, 5 MCDs, 1 us apart on the sources' clocks,
so 10 windows of 20 ms per source with --window 0.02) go into a new 4-partition
topic keyed by source, in messages of 500 records (JSON), then:

  kcat         `kcat -C -e` of every message of the topic (the baseline: reading only)
  1 instance   `ptc analyze` (exactly-once, windows of 20 ms): started on a new topic and
               warmed up (its start-up: to its first window results), then from producing
               the probes to the last window result committed in the output topic
  2 instances  the same with two instances in one group
  replay       `ptc replay CAPTURE --topic T` of --count probes (the collector's rate into Kafka, bench_kafka.py)
  in process   per-probe CPU time (time.process_time, best of 5, engines interleaved) of each engine's work on the
               same messages: split (parse + aggregate per window) and merge (the reduce, through the state's
               serializer), and the read-out of the closed windows
  latency      one instance fed live at --rate probes/s with the wall clock as the sources'
               clock (every 50 ms one message per source, as a collector lingering 50 ms sends),
               windows of 1 s, grace 0.2 s: for each window result, its arrival time minus the
               window's end plus grace (the earliest it could close)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
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
from bench_kafka import broker, capture, replay_command  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from pt_collector.codec.decode import Decoder  # noqa: E402
from pt_collector.codec.generate import generate  # noqa: E402
from pt_collector.codec.record import Record  # noqa: E402
from pt_collector.codec.wire import LINKTYPE_RAW  # noqa: E402
from pt_collector.kafka.kinds import decode_any_message  # noqa: E402
from pt_collector.kafka.message import build_message  # noqa: E402

try:
    from pt_collector.analyze import engines
    from pt_collector.analyze.app import state_dumps, state_loads
except ImportError as exc:  # the analyze extra
    raise SystemExit(f"bench_analyze: {exc} (pip install -e '.[analyze]')") from None

SOURCES, BATCH, PARTITIONS = 16, 500, 4
TICK_S = 0.05  # the latency run's producer: every 50 ms a message per source (a collector's --linger-ms 50)
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


def renamed(r: Record, addr: str) -> Record:
    return msgspec.structs.replace(r, src=msgspec.structs.replace(r.src, addr=addr))


def shifted(r: Record, by_ns: int) -> Record:
    """The probe sent `by_ns` later: every time moved, every delay kept."""
    hops = tuple(msgspec.structs.replace(h, time_ns=h.time_ns + by_ns) if h.time_ns is not None else h for h in r.hops)
    sink = msgspec.structs.replace(r.sink, time_ns=r.sink.time_ns + by_ns) if r.sink is not None else None
    src = msgspec.structs.replace(r.src, time_ns=r.src.time_ns + by_ns)
    return msgspec.structs.replace(r, src=src, hops=hops, sink=sink, capture_ns=r.capture_ns + by_ns)


def new_topic(brokers: str) -> str:
    name = f"bench-analyze-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": brokers})  # held until the topic exists
    for future in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
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


def start(brokers: str, topic: str, out: str, group: str, state: Path, window: float, grace: float, log=None):
    return subprocess.Popen(
        [sys.executable, "-m", "pt_collector.cli.main", "analyze", "--brokers", brokers, "--topic", topic,
         "--output-topic", out, "--events-topic", f"{out}-events", "--group", group, "--state-dir", str(state),
         "--window", str(window), "--grace", str(grace)],
        stderr=log or subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def cpu_seconds(procs: list[subprocess.Popen]) -> float:
    """User + system CPU time the processes used so far (/proc/PID/stat)."""
    total = 0
    for p in procs:
        fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def replay(count: int, brokers: str) -> tuple[float, float]:
    """`ptc replay --topic` of `count` generated probes: (probes/s acknowledged, probes per CPU-second), the CPU
    time less that of replaying 1,000 probes (the interpreter's start-up and imports)."""
    runs = []
    for n in (1000, count):
        path = capture(n)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        acked, seconds = replay_command(path, brokers, new_topic(brokers), "json", "none")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs.append((acked, seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime))
    (small, _, small_cpu), (acked, seconds, cpu) = runs
    return acked / seconds, (acked - small) / (cpu - small_cpu)


def analyze(brokers: str, rs: list[Record], instances: int, tmp: Path) -> tuple[float, float, float]:
    """(start-up: seconds to the first results, seconds from producing `rs` to their last window result, CPU
    seconds the instances used meanwhile).

    The instances start on a new topic and first aggregate a warm-up of one probe per source (other
    sources than `rs`'s), so the group has formed before `rs` is produced.
    """
    topic, out, group = new_topic(brokers), f"out-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    warm = [renamed(r, r.src.addr.replace("2001:db8:", "2001:db9:")) for r in rs[:SOURCES]]
    begin = time.monotonic()
    procs = [start(brokers, topic, out, group, tmp / f"{group}-{i}", 0.02, 0.0) for i in range(instances)]
    reader = output_reader(brokers, out)
    try:
        produce(brokers, topic, warm + closers(warm, 100 * NS))
        _wait(reader, SOURCES)
        startup = time.monotonic() - begin
        time.sleep(5)  # any rebalance of a late joiner settles
        windows = len({(r.src.addr, r.src.time_ns // (20 * NS)) for r in rs})
        begin, cpu = time.monotonic(), cpu_seconds(procs)
        produce(brokers, topic, rs + closers(rs, 100 * NS))
        _wait(reader, windows)
        return startup, time.monotonic() - begin, cpu_seconds(procs) - cpu
    finally:
        reader.close()
        for p in procs:
            p.terminate()
            p.wait(60)


def _wait(reader: Consumer, results: int) -> None:
    seen, deadline = 0, time.monotonic() + 600
    while seen < results and time.monotonic() < deadline:
        m = reader.poll(0.2)
        if m is not None and not m.error():
            seen += len(decode_any_message(m.value(), m.headers()))
    assert seen >= results, f"{seen} of {results} window results"


def latency(brokers: str, rate: int, seconds: int, tmp: Path) -> list[float]:
    topic = new_topic(brokers)
    out = f"out-{uuid.uuid4().hex[:8]}"
    log = (tmp / "latency.log").open("wb")
    proc = start(brokers, topic, out, f"g-{uuid.uuid4().hex[:8]}", tmp / "latency", 1.0, 0.2, log)
    time.sleep(10)  # start-up and group join, not part of the latency
    template = records(SOURCES)
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    reader = output_reader(brokers, out)
    delays: list[float] = []
    sequence: dict[str, int] = defaultdict(int)
    try:
        end = time.time() + seconds
        per_message = max(1, round(rate * TICK_S / SOURCES))  # a collector's batch: its linger's worth of probes
        while time.time() < end:
            now_ns = time.time_ns()
            for r in template:
                batch = []
                for k in range(per_message):
                    sequence[r.src.addr] += 1
                    at = now_ns - round((per_message - 1 - k) * TICK_S * 1e9 / per_message)
                    batch.append(
                        msgspec.structs.replace(shifted(r, at - r.src.time_ns), sequence=sequence[r.src.addr] & 0xFFFF)
                    )
                m = build_message(batch, "json")
                producer.produce(topic, m.value, m.key, headers=m.headers)
            producer.poll(0)
            delays.extend(_arrivals(reader))
            time.sleep(max(0.0, TICK_S - (time.time_ns() - now_ns) / 1e9))
        producer.flush(10)
        delays.extend(_arrivals(reader, wait=5.0))
    finally:
        reader.close()
        proc.terminate()
        proc.wait(60)
    if not delays:
        print((tmp / "latency.log").read_text()[-3000:], file=sys.stderr)
    return delays


def _arrivals(reader: Consumer, wait: float = 0.0) -> list[float]:
    got = []
    deadline = time.monotonic() + wait
    while True:
        m = reader.poll(0.01 if not wait else 0.1)
        if m is None:
            if time.monotonic() >= deadline:
                return got
            continue
        if m.error():
            continue
        now = time.time()
        for h in decode_any_message(m.value(), m.headers()):
            got.append(now - (h.start_ns + h.interval_ns) / 1e9 - 0.2)


def in_process(rs: list[Record], rounds: int = 5) -> dict[str, tuple[float, float, float]]:
    """Per engine: CPU us per probe of (split, merge, read-out) over the bench's messages, best of `rounds`."""
    messages = []
    by_source: dict[str, list[Record]] = defaultdict(list)
    for r in rs:
        by_source[r.src.addr].append(r)
    for source, batch in by_source.items():
        messages += [(source, build_message(batch[i : i + BATCH], "json")) for i in range(0, len(batch), BATCH)]
    aggregators = [engines.PythonAggregator()] + ([engines.NativeAggregator()] if engines._native else [])
    best: dict[str, list[float]] = {a.name: [float("inf")] * 3 for a in aggregators}
    for _ in range(rounds):
        for a in aggregators:  # interleaved: the shared CPU's state is alike for both
            t0 = time.process_time()
            items = [(source, item) for source, m in messages for item in a.split(m.value, m.headers, source, 20)]
            t1 = time.process_time()
            windows: dict[tuple[str, int], object] = {}
            for source, (latest, aggregate, _) in items:
                key = (source, latest - latest % 20)
                held = windows.get(key)
                windows[key] = state_loads(state_dumps(aggregate if held is None else a.merge(held, aggregate)))
            t2 = time.process_time()
            for aggregate in windows.values():
                a.read(aggregate)
            t3 = time.process_time()
            spent = (t1 - t0, t2 - t1, t3 - t2)
            best[a.name] = [min(b, t * 1e6 / len(rs)) for b, t in zip(best[a.name], spent, strict=True)]
    return {name: tuple(b) for name, b in best.items()}  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--brokers")
    parser.add_argument("--rate", type=int, default=2000, help="probes/s for the latency run")
    parser.add_argument("--seconds", type=int, default=15, help="length of the latency run")
    args = parser.parse_args()
    rs = records(args.count)
    with broker(args.brokers) as brokers, tempfile.TemporaryDirectory() as tmp:
        topic = new_topic(brokers)
        messages = produce(brokers, topic, rs)
        print(
            f"# ptc analyze, {platform.node()}, {datetime.date.today()}: {args.count:,} probes, {messages:,} messages"
        )
        for name, (split, merge, read) in in_process(rs).items():
            total = split + merge + read
            print(f"in process, {name:6} engine: split {split:6.2f} us/probe, merge {merge:5.2f}, read-out {read:5.2f}"
                  f" = {total:6.2f} us/probe CPU ({1e6 / total:>9,.0f} probes/s)")  # fmt: skip
        rate, per_cpu = replay(args.count, brokers)
        print(f"ptc replay --topic  {rate:>10,.0f} probes/s, {per_cpu:>9,.0f} probes per CPU-second "
              "(the collector's rate)")  # fmt: skip
        elapsed = kcat(brokers, topic, messages)
        print(f"kcat           {elapsed:6.2f} s  {args.count / elapsed:>10,.0f} probes/s (reading only)")
        for n in (1, 2):
            startup, elapsed, cpu = analyze(brokers, rs, n, Path(tmp))
            print(f"{n} instance(s)  {elapsed:6.2f} s  {args.count / elapsed:>10,.0f} probes/s "
                  f"(produce to last window result; start-up {startup:.1f} s); CPU {cpu:.2f} s: "
                  f"{args.count / cpu:,.0f} probes per CPU-second")  # fmt: skip
        delays = sorted(latency(brokers, args.rate, args.seconds, Path(tmp)))
        if delays:
            median = statistics.median(delays)
            print(f"latency: {len(delays)} window results, after window end + grace: median {median:.3f} s, ", end="")
            print(f"max {delays[-1]:.3f} s ({args.rate} probes/s, windows of 1 s, grace 0.2 s)")


if __name__ == "__main__":
    main()
