"""The live pipeline (collect.Worker) with a fake receiver: the kernel side is tested over veth."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from pt_collector import DecodeError, Decoder
from pt_collector.capture.pcap import read_capture
from pt_collector.codec.encode import ethernet
from pt_collector.codec.generate import generate
from pt_collector.pipeline.collect import BURST, Worker, run_worker
from pt_collector.pipeline.engine import PythonEngine
from pt_collector.pipeline.sinks import ListSink
from pt_collector.pipeline.stats import CollectStats


class FakeReceiver:
    """Frames pushed by the test; readable through a pipe, like a socket."""

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        self.pending: list[tuple[int, bytes]] = []
        self.drains = 0

    def push(self, frames: list[tuple[int, bytes]]) -> None:
        self.pending += frames
        os.write(self.write_end, b"x")

    def fileno(self) -> int:
        return self.read_end

    def drain(self, out: list[tuple[int, bytes]], limit: int) -> int:
        self.drains += 1
        with contextlib.suppress(BlockingIOError):
            os.read(self.read_end, 4096)
        taken = self.pending[:limit]
        del self.pending[:limit]
        out += taken
        return len(taken)

    def check_interface(self) -> None:
        pass

    def stop_receiving(self) -> float:
        return 0.0

    def ring_use(self) -> float:
        return 0.0

    def unread(self) -> int:
        return 0

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.write_end)


def probes(count: int) -> list[tuple[int, bytes]]:
    return [(t, ethernet(p)) for t, p in generate(count, seed=5)]


async def until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_every_frame_is_counted_and_records_arrive_in_order(pcaps):
    good = probes(50)
    malformed = [(0, f) for _, _, f in read_capture(pcaps / "malformed.pcap")]
    noise = [(0, f) for _, _, f in read_capture(pcaps / "mixed.pcapng")][:5]
    pushed = [good[:20] + malformed + noise, good[20:]]

    async def scenario() -> tuple[CollectStats, ListSink]:
        receiver, sink = FakeReceiver(), ListSink()
        worker = Worker(receiver, PythonEngine(Decoder()), sink, kernel_stats=lambda: (7, 1))
        task = asyncio.create_task(worker.run())
        for frames in pushed:
            receiver.push(frames)
        await until(lambda: worker.stats.frames == 50 + len(malformed) + len(noise))
        worker.stop()
        return await task, sink

    stats, sink = asyncio.run(scenario())
    decoder, expected = Decoder(), []
    for t, frame in pushed[0] + pushed[1]:
        with contextlib.suppress(DecodeError):
            if (record := decoder.decode(frame, t)) is not None:
                expected.append(record)
    assert sink.records == expected
    assert stats.decoded == len(expected) == 52  # 50 generated + the 2 good ones in malformed.pcap
    assert stats.not_pt == 5 and sum(stats.malformed.values()) == 5
    assert stats.sent == stats.acked == stats.batched == 52
    assert (stats.kernel_received, stats.kernel_dropped) == (7, 1)


def test_a_burst_larger_than_one_drain_is_read_completely():
    async def scenario() -> tuple[CollectStats, FakeReceiver]:
        receiver, sink = FakeReceiver(), ListSink()
        worker = Worker(receiver, PythonEngine(Decoder()), sink)
        task = asyncio.create_task(worker.run())
        receiver.push(probes(BURST * 2 + 10))  # one wakeup: the worker must come back by itself
        await until(lambda: worker.stats.frames == BURST * 2 + 10)
        worker.stop()
        return await task, receiver

    stats, receiver = asyncio.run(scenario())
    assert stats.decoded == BURST * 2 + 10
    assert receiver.drains >= 3


def test_sigterm_stops_flushes_and_returns_the_counters():
    class SlowFlush(ListSink):
        flushed = False

        async def flush(self) -> None:
            await asyncio.sleep(0.05)
            self.flushed = True

    async def scenario() -> tuple[CollectStats, SlowFlush, list[CollectStats]]:
        receiver, sink = FakeReceiver(), SlowFlush()
        worker = Worker(receiver, PythonEngine(Decoder()), sink)
        reports: list[CollectStats] = []
        task = asyncio.create_task(run_worker(worker, lambda s: reports.append(CollectStats(**vars(s))), 0.05))
        receiver.push(probes(10))
        await until(lambda: worker.stats.decoded == 10)
        await asyncio.sleep(0.12)
        receiver.pending += probes(3)  # arrived, but no wakeup yet: the stop still reads them
        os.kill(os.getpid(), signal.SIGTERM)
        return await task, sink, reports

    stats, sink, reports = asyncio.run(scenario())
    assert sink.flushed and stats.decoded == len(sink.records) == 13
    assert any(r.decoded == 10 for r in reports)  # reported while running, before the stop


def test_stats_survive_the_trip_between_processes():
    stats = CollectStats(kernel_received=5, decoded=3)
    stats.malformed["srh: no PT TLV"] = 2
    again = CollectStats.from_dict(stats.to_dict())
    assert again == stats
    total = CollectStats()
    total.add(stats)
    total.add(again)
    assert total.decoded == 6 and total.malformed["srh: no PT TLV"] == 4
