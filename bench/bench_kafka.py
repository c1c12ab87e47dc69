#!/usr/bin/env python3
"""Kafka delivery speed: `ptc replay --topic` into a real broker, next to one send() per probe, in one run.

    python bench/bench_kafka.py [--count 300000] [--baseline-count 20000] [--rounds 3] [--brokers HOST:PORT]

Without --brokers it starts its own broker with scripts/kafka.sh on spare
ports, with the JVM flags and heap Kafka's own kafka-server-start.sh uses
(G1, the normal tiered JIT, 1 GiB): BENCH_KAFKA_JVM_OPTS and BENCH_KAFKA_HEAP
change them (the tests' lean flags, C1 only and serial GC, cap the broker).
A capture of --count encapsulated probes (5 MCDs, 3 segments, 16 sources)
is generated once into bench/out/. Every figure is probes acknowledged by
the broker per second (acks=all, idempotent), best of --rounds, the cases
interleaved round by round, after --warm-up seconds of replays not counted
(the broker's JIT compiles for minutes of traffic; a broker in service is
warm):

  per-probe send   how collectors usually deliver: the pure decoder and one
                   JSON message per probe, one aiokafka send() each (futures
                   gathered at the end), over --baseline-count probes
  replay           the `ptc replay FILE --topic T` command (PTC_ENGINE native,
                   or python for the pure engine), its own "elapsed": read,
                   decode, batch, send, until the last acknowledgement
  before           with --before ROOT, `ptc replay` of another checkout
                   (its package and built engine), for a before/after
  stage            the Kafka path on its own, in process: the capture read in
                   place by the native engine (decode_capture, 4096 frames a
                   call, as replay) into the KafkaSink, until flush returns;
                   for snappy also with aiokafka's send() building the
                   record batches (the path before the native engine built
                   them, kafka/recordbatch.py); and for
                   --before-codecs the same with the records handed over as
                   Record objects read back from the engine's bytes (the
                   Kafka path before messages were cut from encoded groups)
  pre-encoded      the issue's experiment, with --pre-encoded codecs: the
                   capture's records encoded beforehand by the native engine,
                   per source node in 256 KiB messages, one aiokafka send()
                   each (acks=all, idempotent): aiokafka and the broker alone

With each: CPU per probe of ptc (the process) and of the broker (its JVM),
which says what bounds the rate. Topics are new, --partitions partitions,
segment.bytes 1 GiB (scripts/kafka.sh sets 1 MiB for the tests' broker).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import mmap
import os
import platform
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
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
from bench_decode import cpu_model  # noqa: E402

from pt_collector.capture.pcap import read_capture  # noqa: E402
from pt_collector.codec.decode import Decoder  # noqa: E402
from pt_collector.codec.record import EncodedRecords, json_encoder  # noqa: E402
from pt_collector.kafka.client import CODECS, Cluster, ProducerSettings  # noqa: E402
from pt_collector.kafka.recordbatch import NATIVE_CODECS  # noqa: E402
from pt_collector.kafka.sink import open_kafka_sink  # noqa: E402
from pt_collector.pipeline.batch import Batcher  # noqa: E402
from pt_collector.pipeline.engine import NATIVE, NATIVE_BATCH, NativeMsgpackRecords, NativeRecords  # noqa: E402

SOURCES = 16
SEGMENT_BYTES = str(1 << 30)
# kafka-server-start.sh's heap and kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS: the broker as Kafka runs it
KAFKA_JVM_OPTS = (
    "-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 "
    "-XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true"
)
KAFKA_HEAP = "-Xmx1G -Xms1G"


@dataclass
class Figure:
    case: str
    probes: int
    seconds: float
    cpu_s: float  # ptc's CPU time (the process, or the child command)
    broker_cpu_s: float | None
    messages: int | None = None

    @property
    def rate(self) -> float:
        return self.probes / self.seconds


@dataclass
class Broker:
    address: str
    pid: int | None  # None: brokers given, their CPU unknown

    def cpu_s(self) -> float | None:
        if self.pid is None:
            return None
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def capture(count: int) -> Path:
    return decode_capture(count, sources=SOURCES, name="kafka")


@contextmanager
def broker(given: str | None) -> Iterator[Broker]:
    """The given brokers, or a throwaway broker from scripts/kafka.sh on spare ports, with Kafka's own JVM flags."""
    if given:
        yield Broker(given, None)
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
            KAFKA_JVM_OPTS=os.environ.get("BENCH_KAFKA_JVM_OPTS", KAFKA_JVM_OPTS),
            KAFKA_HEAP=os.environ.get("BENCH_KAFKA_HEAP", KAFKA_HEAP),
        )  # fmt: skip
        script = str(ROOT / "scripts" / "kafka.sh")
        subprocess.run(["bash", script, "up"], env=env, check=True, stdout=subprocess.DEVNULL)
        try:
            yield Broker(f"127.0.0.1:{ports[0]}", int(Path(tmp, f"broker-{ports[0]}.pid").read_text()))
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


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def replay_command(
    path: Path, broker: Broker, topic: str, engine: str, fmt: str, codec: str, extra: list[str], root: str | None = None
) -> Figure:
    """`ptc replay` into Kafka: probes acknowledged and elapsed from its summary, its CPU from the kernel.

    `root`: the ptc of another checkout (its package and built engine first on the path), for a before/after.
    """
    command = [
        sys.executable, "-m", "pt_collector.cli.main", "replay", str(path), "--brokers", broker.address,
        "--topic", topic, "--format", fmt, "--compression", codec, "--no-progress", *extra,
    ]  # fmt: skip
    cpu, broker_cpu = children_cpu(), broker.cpu_s()
    env = dict(os.environ, PTC_ENGINE=engine, **({"PYTHONPATH": root} if root else {}))
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env, cwd=root)  # -m: cwd first
    cpu, broker_cpu = children_cpu() - cpu, _less(broker.cpu_s(), broker_cpu)
    if done.returncode != 0:
        raise SystemExit(f"ptc replay failed ({done.returncode}):\n{done.stderr}")
    acked = _number(r"^acknowledged +([\d,]+)", done.stderr)
    elapsed = float(re.search(r"^elapsed +([\d.]+) s", done.stderr, re.M).group(1))
    messages = _number(r"records in ([\d,]+) messages", done.stderr)
    return Figure("", acked, elapsed, cpu, broker_cpu, messages)


def _number(pattern: str, text: str) -> int:
    return int(re.search(pattern, text, re.M).group(1).replace(",", ""))


def _less(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


async def stage(
    path: Path, broker: Broker, topic: str, fmt: str, codec: str, extra: dict, objects: bool = False, built: bool = True
) -> Figure:
    """The Kafka path alone: the capture read in place by the native engine, into the KafkaSink, until flush.

    `objects`: the records handed over as Record objects read back from the engine's bytes (the path before).
    `built`: each message's record batch built by the native engine (kafka/recordbatch.py), else aiokafka's send().
    """
    from pt_collector import _native

    settings = ProducerSettings(
        compression=codec, max_value_bytes=extra.get("batch_bytes", 900 * 1024), native_batches=built
    )
    batcher = Batcher(fmt, extra.get("batch_size", 1000), settings.max_value_bytes, 0.1)
    wrap = NativeRecords if fmt == "json" else NativeMsgpackRecords
    if objects:
        wrap = (
            (lambda b: EncodedRecords(b.data, b.decoded))
            if fmt == "json"
            else (lambda b: list(NativeMsgpackRecords(b)))
        )
    decoder, reader = _native.Decoder(None, None, fmt), _native.CaptureReader()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        async with open_kafka_sink(Cluster(broker.address), settings, topic, batcher) as sink:
            cpu, broker_cpu, started = time.process_time(), broker.cpu_s(), time.perf_counter()
            while reader.offset < len(view):
                batch, used, error = decoder.decode_capture(reader, view[reader.offset :], True, NATIVE_BATCH)
                if error or not used:
                    raise SystemExit(f"{path}: {error or 'no progress'}")
                if batch.decoded:
                    await sink.write(wrap(batch))
            await sink.flush()
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            broker_cpu = _less(broker.cpu_s(), broker_cpu)
        del view
    return Figure("", sink.counters.acked, elapsed, cpu, broker_cpu, sink.counters.messages)


def encoded_messages(path: Path, size: int) -> list[tuple[bytes, bytes, int]]:
    """The capture's records as the native engine encodes them (JSON lines), per source node, cut into values of
    at most `size` bytes at line ends: (key, value, records)."""
    from pt_collector import _native

    decoder, reader, by_source = _native.Decoder(None, None, "json"), _native.CaptureReader(), {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = memoryview(mapped)
        while reader.offset < len(view):
            batch, _, _ = decoder.decode_capture(reader, view[reader.offset :], True, NATIVE_BATCH)
            for source, data, _ in batch.groups():
                by_source.setdefault(source, []).append(bytes(data))
        del view
    found = []
    for source, parts in by_source.items():
        data, at = b"".join(parts), 0
        while at < len(data):
            end = data.rfind(b"\n", at, at + size) + 1
            found.append((source.encode(), data[at:end], data.count(b"\n", at, end)))
            at = end
    return found


async def pre_encoded(messages: list[tuple[bytes, bytes, int]], broker: Broker, topic: str, codec: str) -> Figure:
    """The issue's experiment: records encoded beforehand, in 256 KiB messages, one aiokafka send() each
    (acks=all, idempotent, `codec`), futures gathered at the end: what aiokafka and the broker do alone."""
    producer = AIOKafkaProducer(
        bootstrap_servers=broker.address, acks="all", enable_idempotence=True, compression_type=codec,
        max_batch_size=1 << 20, max_request_size=1 << 20, linger_ms=0,
    )  # fmt: skip
    await producer.start()
    try:
        await producer.partitions_for(topic)
        cpu, broker_cpu, started = time.process_time(), broker.cpu_s(), time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value, _ in messages]
        await asyncio.gather(*futures)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        probes = sum(n for _, _, n in messages)
        return Figure("", probes, elapsed, cpu, _less(broker.cpu_s(), broker_cpu), len(messages))
    finally:
        await producer.stop()


async def per_probe(path: Path, count: int, broker: Broker, topic: str) -> Figure:
    """One JSON message and one send() per probe, decoding with the pure decoder in the same loop."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.address, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.partitions_for(topic)
        cpu, broker_cpu, started = time.process_time(), broker.cpu_s(), time.perf_counter()
        decoder = Decoder()
        frames = islice(read_capture(path), count)
        records = (decoder.decode(frame, ns, linktype) for linktype, ns, frame in frames)
        futures = [await producer.send(topic, json_encoder.encode(r), key=r.src.addr.encode()) for r in records if r]
        await asyncio.gather(*futures)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        return Figure("", len(futures), elapsed, cpu, _less(broker.cpu_s(), broker_cpu), len(futures))
    finally:
        await producer.stop()


def machine() -> str:
    return f"{os.cpu_count()} cores ({cpu_model()})"


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


BASELINE = "per-probe send (pure decoder, json, none)"


def table(best: dict[str, Figure], least_cpu: dict[str, float]) -> str:
    baseline = best[BASELINE].rate
    lines = [
        "| case | probes | records/message | probes/s | vs per-probe send | ptc CPU us/probe | broker CPU us/probe "
        "| ptc CPU us/probe, least of the rounds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, f in best.items():
        ratio = "1x" if case == BASELINE else f"**{f.rate / baseline:.1f}x**"
        per_message = f"{f.probes / f.messages:,.0f}" if f.messages else ""
        broker_us = "" if f.broker_cpu_s is None else f"{f.broker_cpu_s / f.probes * 1e6:.2f}"
        lines.append(
            f"| {case} | {f.probes:,} | {per_message} | {f.rate:,.0f} | {ratio} | {f.cpu_s / f.probes * 1e6:.2f} "
            f"| {broker_us} | {least_cpu[case] * 1e6:.2f} |"
        )
    return "\n".join(lines)


def cases(args: argparse.Namespace, path: Path, broker: Broker) -> dict[str, Callable[[str], Figure]]:
    """Each case by name: a function of a fresh topic that measures it once."""
    extra = ["--batch-bytes", str(args.batch_bytes), "--batch-size", str(args.batch_size)]
    sizes = {"batch_bytes": args.batch_bytes, "batch_size": args.batch_size}
    found: dict[str, Callable[[str], Figure]] = {
        BASELINE: lambda t: uvloop.run(per_probe(path, args.baseline_count, broker, t))
    }
    codecs = [c for c in args.codecs.split(",") if c == "none" or CODECS[c]()]
    for fmt in args.formats.split(","):
        for codec in codecs:
            found[f"replay, native, {fmt}, {codec}"] = lambda t, f=fmt, c=codec: replay_command(
                path, broker, t, "native", f, c, extra
            )
        for codec in filter(None, args.pure_codecs.split(",")):
            found[f"replay, python, {fmt}, {codec}"] = lambda t, f=fmt, c=codec: replay_command(
                path, broker, t, "python", f, c, extra
            )
        for codec in filter(None, args.before_codecs.split(",")) if args.before else []:
            commit = subprocess.run(
                ["git", "-C", args.before, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
            ).stdout.strip()
            found[f"replay, native, {fmt}, {codec}, before ({commit or args.before})"] = lambda t, f=fmt, c=codec: (
                replay_command(path, broker, t, "native", f, c, extra, args.before)
            )
        for codec in filter(None, args.before_codecs.split(",")) if args.stage else []:
            found[f"stage, native, {fmt}, {codec}, Record objects (the path before)"] = lambda t, f=fmt, c=codec: (
                uvloop.run(stage(path, broker, t, f, c, sizes, objects=True))
            )
        for codec in codecs if args.stage else []:
            found[f"stage, native, {fmt}, {codec}"] = lambda t, f=fmt, c=codec: uvloop.run(
                stage(path, broker, t, f, c, sizes)
            )
            if codec in NATIVE_CODECS:
                found[f"stage, native, {fmt}, {codec}, aiokafka send() (the path before)"] = lambda t, f=fmt, c=codec: (
                    uvloop.run(stage(path, broker, t, f, c, sizes, built=False))
                )
    if args.pre_encoded:
        messages = encoded_messages(path, 256 * 1024)
        for codec in args.pre_encoded.split(","):
            found[f"pre-encoded JSON lines, 256 KiB messages, aiokafka send(), {codec}"] = lambda t, c=codec: (
                uvloop.run(pre_encoded(messages, broker, t, None if c == "none" else c))
            )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300_000, help="probes in the capture")
    parser.add_argument("--baseline-count", type=int, default=20_000, help="probes for the per-probe baseline")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every case, interleaved; best of them")
    parser.add_argument("--brokers", help="use these brokers instead of starting one")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of each topic")
    parser.add_argument("--formats", default="json", help="message formats to run (json,msgpack)")
    parser.add_argument("--codecs", default="none,gzip,snappy,lz4,zstd", help="compression codecs, native engine")
    parser.add_argument("--pure-codecs", default="none", help="compression codecs for the pure engine")
    parser.add_argument("--batch-size", type=int, default=1000, help="--batch-size of ptc replay")
    parser.add_argument("--batch-bytes", type=int, default=900 * 1024, help="--batch-bytes of ptc replay")
    parser.add_argument("--before", metavar="ROOT", help="also replay with the ptc of this checkout (before/after)")
    parser.add_argument("--before-codecs", default="none,zstd", help="compression codecs for --before")
    parser.add_argument("--no-stage", dest="stage", action="store_false", help="leave out the in-process stage")
    parser.add_argument("--pre-encoded", default="zstd,snappy", help="codecs of the pre-encoded experiment ('': none)")
    parser.add_argument(
        "--warm-up", type=float, default=180.0, help="seconds of replays before measuring, for the broker's JIT"
    )
    args = parser.parse_args()
    if not NATIVE:
        raise SystemExit("the native engine is not built (make setup)")
    path = capture(args.count)
    results: dict[str, list[Figure]] = {}
    started = time.perf_counter()
    with broker(args.brokers) as b:
        measured = cases(args, path, b)
        warm_up, until = next(case for case in measured if case.startswith("replay")), time.monotonic() + args.warm_up
        while True:  # the broker's JIT compiles for minutes of traffic: a broker in service is warm
            measured[warm_up](uvloop.run(new_topic(b.address, args.partitions)))
            if time.monotonic() >= until:
                break
        for round_ in range(args.rounds):
            for case, measure in measured.items():
                figure = measure(uvloop.run(new_topic(b.address, args.partitions)))
                results.setdefault(case, []).append(figure)
                print(f"  round {round_ + 1}: {case}: {figure.rate:,.0f} probes/s (load {load()})", file=sys.stderr)
    best = {case: max(figures, key=lambda f: f.rate) for case, figures in results.items()}
    jvm = "given brokers" if args.brokers else os.environ.get("BENCH_KAFKA_JVM_OPTS", KAFKA_JVM_OPTS)
    print(
        f"\n`python bench/bench_kafka.py --count {args.count} --baseline-count {args.baseline_count}"
        f" --rounds {args.rounds} --warm-up {args.warm_up:g} --partitions {args.partitions}"
        f" --formats {args.formats} --codecs {args.codecs}"
        f" --batch-size {args.batch_size} --batch-bytes {args.batch_bytes}`, {datetime.date.today()}, {machine()},"
        f" Python {platform.python_version()}, aiokafka {aiokafka.__version__}, Apache Kafka 4.1.2 (scripts/kafka.sh,"
        f" JVM {jvm}, heap {os.environ.get('BENCH_KAFKA_HEAP', KAFKA_HEAP)}), acks=all, idempotent;"
        f" best of {args.rounds}, interleaved; {time.perf_counter() - started:.0f} s, load average now {load()}\n"
    )
    least_cpu = {case: min(f.cpu_s / f.probes for f in figures) for case, figures in results.items()}
    print(table(best, least_cpu))


if __name__ == "__main__":
    main()
