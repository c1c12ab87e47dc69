#!/usr/bin/env python3
"""Kafka delivery speed: `ptc replay` into a real broker, next to one send() per probe, in one run.

    python bench/bench_kafka.py [--count 200000] [--baseline-count 20000] [--brokers HOST:PORT]

Without --brokers it starts its own broker with scripts/kafka.sh on a spare
port and stops it at the end. A capture of --count encapsulated probes
(5 MCDs, 3 segments, 16 sources) is generated once into bench/out/. Figures,
all in probes acknowledged by the broker per second (acks=all, idempotent):

  replay     the `ptc replay FILE --topic T` command: read, decode, batch, send,
             until the last message is acknowledged (its own "elapsed")
  delivery   the Kafka stage alone: records already decoded, written to the
             KafkaSink in batches of 1024, until flush returns
  baseline   how collectors usually deliver: one JSON message per probe, one
             aiokafka send() each (futures gathered at the end), over
             --baseline-count probes: "delivery" from decoded records,
             "replay" decoding the capture in the same loop

Every topic is new, with --partitions partitions and segment.bytes at the
Kafka default of 1 GiB (scripts/kafka.sh sets 1 MiB for its test broker,
which costs delivery about half its speed through segment rolls).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import aiokafka  # noqa: E402
import uvloop  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from bench_decode import capture as decode_capture  # noqa: E402

from pt_collector.capture.pcap import read_capture  # noqa: E402
from pt_collector.codec.decode import Decoder  # noqa: E402
from pt_collector.codec.record import Record, json_encoder  # noqa: E402
from pt_collector.kafka.client import CODECS, Cluster, ProducerSettings  # noqa: E402
from pt_collector.kafka.sink import open_kafka_sink  # noqa: E402
from pt_collector.pipeline.batch import Batcher  # noqa: E402

SOURCES = 16
SEGMENT_BYTES = str(1 << 30)
CASES = [(fmt, codec) for fmt in ("json", "msgpack") for codec in ("none", "gzip", "snappy", "lz4", "zstd")]


@dataclass
class Figure:
    stage: str
    what: str
    probes: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.probes / self.seconds


def capture(count: int) -> Path:
    return decode_capture(count, sources=SOURCES, name="kafka")


@contextmanager
def broker(given: str | None) -> Iterator[str]:
    """The given brokers, or a throwaway broker from scripts/kafka.sh on a spare port."""
    if given:
        yield given
        return
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="ptc-bench-kafka-") as tmp:
        env = dict(
            os.environ, KAFKA_PORT=str(ports[0]), KAFKA_CONTROLLER_PORT=str(ports[1]), KAFKA_DIR=tmp,
            KAFKA_LIBS=str(ROOT / ".kafka" / "libs"), KAFKA_PYTHON=sys.executable, KAFKA_CLEAN="1",
        )  # fmt: skip
        script = str(ROOT / "scripts" / "kafka.sh")
        subprocess.run(["bash", script, "up"], env=env, check=True, stdout=subprocess.DEVNULL)
        try:
            yield f"127.0.0.1:{ports[0]}"
        finally:
            subprocess.run(["bash", script, "down"], env=env, check=False, stdout=subprocess.DEVNULL)


async def new_topic(brokers: str, partitions: int) -> str:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs={"segment.bytes": SEGMENT_BYTES})])
    finally:
        await admin.close()
    return topic


def replay_command(path: Path, brokers: str, topic: str, fmt: str, codec: str) -> tuple[int, float]:
    """(probes acknowledged, elapsed seconds) from the summary of `ptc replay` into Kafka."""
    command = [
        sys.executable, "-m", "pt_collector.cli.main", "replay", str(path), "--brokers", brokers, "--topic", topic,
        "--format", fmt, "--compression", codec, "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"ptc replay failed ({done.returncode}):\n{done.stderr}")
    acked = int(re.search(r"^acknowledged +([\d,]+)", done.stderr, re.M).group(1).replace(",", ""))
    elapsed = float(re.search(r"^elapsed +([\d.]+) s", done.stderr, re.M).group(1))
    return acked, elapsed


async def deliver(records: list[Record], brokers: str, topic: str, fmt: str, codec: str) -> float:
    settings = ProducerSettings(compression=codec)
    batcher = Batcher(fmt, 1000, 900 * 1024, 0.1)
    async with open_kafka_sink(Cluster(brokers), settings, topic, batcher) as sink:
        started = time.perf_counter()
        for i in range(0, len(records), 1024):
            await sink.write(records[i : i + 1024])
        await sink.flush()
        elapsed = time.perf_counter() - started
    if sink.counters.acked != len(records):
        raise SystemExit(f"delivery {fmt}/{codec}: {sink.counters.acked} of {len(records)} acknowledged")
    return elapsed


async def per_probe(records: list[Record] | None, path: Path, count: int, brokers: str, topic: str) -> float:
    """One JSON message and one send() per probe; decoding in the loop when `records` is None."""
    producer = AIOKafkaProducer(bootstrap_servers=brokers, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.partitions_for(topic)
        started = time.perf_counter()
        if records is None:
            decoder = Decoder()
            frames = islice(read_capture(path), count)
            records_in = (decoder.decode(frame, ns, linktype) for linktype, ns, frame in frames)
        else:
            records_in = iter(records[:count])
        futures = [await producer.send(topic, json_encoder.encode(r), key=r.src.addr.encode()) for r in records_in if r]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def machine() -> str:
    model = ""
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    return f"{os.cpu_count()} cores ({model or platform.processor()})"


def table(figures: list[Figure], baseline: dict[str, float]) -> str:
    lines = [
        "| stage | format / compression | probes | seconds | probes/s | vs per-probe send |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for f in figures:
        ratio = (
            f"{f.rate / baseline[f.stage]:.1f}x" if f.stage in baseline and not f.what.startswith("per-probe") else ""
        )
        lines.append(f"| {f.stage} | {f.what} | {f.probes:,} | {f.seconds:.2f} | {f.rate:,.0f} | {ratio} |")
    return "\n".join(lines)


async def in_process(args: argparse.Namespace, brokers: str, path: Path, cases: list[tuple[str, str]]) -> list[Figure]:
    decoder = Decoder()
    records = [r for linktype, ns, frame in read_capture(path) if (r := decoder.decode(frame, ns, linktype))]
    figures = []
    for fmt, codec in cases:
        seconds = await deliver(records, brokers, await new_topic(brokers, args.partitions), fmt, codec)
        figures.append(Figure("delivery", f"{fmt} / {codec}", len(records), seconds))
        print(f"  delivery {fmt}/{codec}: {figures[-1].rate:,.0f} probes/s", file=sys.stderr)
    n = args.baseline_count
    seconds = await per_probe(records, path, n, brokers, await new_topic(brokers, args.partitions))
    figures.append(Figure("delivery", "per-probe send, json / none", n, seconds))
    seconds = await per_probe(None, path, n, brokers, await new_topic(brokers, args.partitions))
    figures.append(Figure("replay", "per-probe send, json / none", n, seconds))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200_000, help="probes in the capture")
    parser.add_argument("--baseline-count", type=int, default=20_000, help="probes for the per-probe baseline")
    parser.add_argument("--brokers", help="use these brokers instead of starting one")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of each topic")
    parser.add_argument("--codecs", default="none,gzip,snappy,lz4,zstd", help="compression codecs to run")
    args = parser.parse_args()
    codecs = [c for c in args.codecs.split(",") if c == "none" or CODECS[c]()]
    cases = [(fmt, codec) for fmt, codec in CASES if codec in codecs]
    path = capture(args.count)
    figures = []
    with broker(args.brokers) as brokers:
        for fmt, codec in cases:
            acked, seconds = replay_command(path, brokers, uvloop.run(new_topic(brokers, args.partitions)), fmt, codec)
            figures.append(Figure("replay", f"{fmt} / {codec}", acked, seconds))
            print(f"  replay {fmt}/{codec}: {figures[-1].rate:,.0f} probes/s", file=sys.stderr)
        figures += uvloop.run(in_process(args, brokers, path, cases))
    baseline = {f.stage: f.rate for f in figures if f.what.startswith("per-probe")}
    figures.sort(key=lambda f: (f.stage != "replay", f.what.startswith("per-probe")))
    print(
        f"\n`python bench/bench_kafka.py --count {args.count} --baseline-count {args.baseline_count}"
        f" --partitions {args.partitions}`, {datetime.date.today()}, {machine()}, Python {platform.python_version()},"
        f" aiokafka {aiokafka.__version__}, Apache Kafka 4.1.2 (scripts/kafka.sh), acks=all, idempotent\n"
    )
    print(table(figures, baseline))


if __name__ == "__main__":
    main()
