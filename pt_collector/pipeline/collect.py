"""Live collection: a receiver on the event loop -> decode -> batch -> sink.

One worker is one receiver (a packet socket, or its TPACKET_V3 ring) read
from the asyncio loop: when the kernel says the socket is readable, the
worker drains a burst of frames, decodes them and writes the records to the
sink, which applies backpressure or drops by its policy. Every frame lands
in one counter; `CollectStats` holds them per stage.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..capture import OUTSIDE_BLOCK, BlockReceiver, Captured
from ..capture.ring import DEFAULT_BLOCK_COUNT, DEFAULT_BLOCK_SIZE
from ..codec.wire import LINKTYPE_ETHERNET
from .core_rules import bind_rules
from .engine import BlockEngine, Decoded, Engine
from .sinks import JsonLinesSink, OutputError, Sink, hand_over
from .stats import BROKER_DOWN, BROKER_UNKNOWN, BROKER_UP, CollectStats

if TYPE_CHECKING:
    from ..capture import Receiver, SharedReceiver
    from ..kafka.sink import DeliveryCounters

BURST = 4096  # frames drained per wakeup at most: the loop stays responsive under a flood
# frames decoded in place per wakeup at most (a ring's blocks, the socket's frames laid out as blocks): a whole 4 MiB
# block of realistic probes (some 13,000) in one engine call and one sink write; cut in parts, each part would cost
# a call and a write of its own. The socket's drain takes as many recv() calls (about 60 ms here) before the loop runs.
BLOCK_BURST = 1 << 14


class Worker:
    """One receiver feeding one sink; `run` returns when stopped and everything is flushed."""

    def __init__(
        self,
        receiver: Receiver,
        engine: Engine,
        sink: Sink,
        *,
        kernel_stats: Callable[[], tuple[int, int]] | None = None,
        delivery: Callable[[CollectStats], None] | None = None,
        shutdown_timeout_s: float | None = None,
    ) -> None:
        self.receiver = receiver
        self.engine = engine
        self.sink = sink
        self.stats = CollectStats()
        self._kernel_stats = kernel_stats
        self._delivery = delivery  # fills sent/acked/dropped/failed from the sink's own counters
        self._wake = asyncio.Event()
        self._stopping = False
        self.error: Exception | None = None
        self.shutdown_timeout_s = shutdown_timeout_s  # how long the last flush may take (None: as long as it takes)
        self.held_at_stop = 0  # records the sink held when capture stopped: the shutdown flush's work
        self.flushed = 0  # of those, acknowledged during the flush
        self.failed_in_flush = 0  # failed during the flush (refused)
        self.unflushed = 0  # still unacknowledged when its time was up (counted as failed when the sink closes)
        self._ring = receiver if isinstance(receiver, BlockReceiver) else None
        # a ring read by the native engine is decoded in place, a block at a time, unless the sink wants the frames
        in_place = self._ring is not None and isinstance(engine, BlockEngine) and not sink.wants_frames
        self._blocks = (self._ring, engine) if in_place else None
        self._burst = BLOCK_BURST if in_place else BURST
        self._frames: list[Captured] = []
        bind_rules(engine, sink)  # flow rules matched in the native engine's core

    def stop(self) -> None:
        """Stop capturing (signal-handler safe): `run` flushes and returns."""
        self._stopping = True
        self._wake.set()

    def check_receiver(self) -> None:
        """The kernel says nothing when a captured interface is deleted: ask, and stop if it is gone."""
        try:
            self.receiver.check_interface()
        except Exception as exc:  # CaptureSetupError: the caller reports it once everything is flushed
            self.error = exc
            self.stop()

    def snapshot(self) -> CollectStats:
        """The counters now, the kernel's and the sink's included."""
        if self._kernel_stats is not None:
            received, dropped = self._kernel_stats()
            self.stats.kernel_received += received
            self.stats.kernel_dropped += dropped
        if self._delivery is not None:
            self._delivery(self.stats)
        else:  # a file sink: written is delivered
            self.stats.sent = self.stats.acked = self.stats.batched
        self.stats.ring_use = self.receiver.ring_use()
        return self.stats

    async def run(self) -> CollectStats:
        loop = asyncio.get_running_loop()
        fd = self.receiver.fileno()

        def readable() -> None:  # once: while a write waits (Kafka away) the socket stays readable: the loop would spin
            loop.remove_reader(fd)
            self._wake.set()

        try:
            while not self._stopping:
                if not self._wake.is_set():
                    loop.add_reader(fd, readable)
                await self._wake.wait()
                self._wake.clear()
                if await self._read(self._burst) >= self._burst:
                    self._wake.set()  # more are waiting: come back after letting the sink run
            await self._drain_at_stop()
        finally:
            loop.remove_reader(fd)
        acked, failed = self._settled()
        try:
            await asyncio.wait_for(self.sink.flush(), self.shutdown_timeout_s)
        except TimeoutError:  # the sink counts what it still holds as failed when it closes
            self.unflushed = self.sink.held
        except OutputError as exc:
            self.error = self.error or exc
        acked_now, failed_now = self._settled()
        self.flushed, self.failed_in_flush = acked_now - acked, failed_now - failed
        self.held_at_stop = self.flushed + self.failed_in_flush + self.unflushed
        return self.snapshot()

    def _settled(self) -> tuple[int, int]:
        """Records acknowledged and failed so far (for a file sink: written, none)."""
        if self._delivery is None:
            return self.stats.batched, 0
        self._delivery(self.stats)
        return self.stats.acked, self.stats.failed

    async def _drain_at_stop(self) -> None:
        """Take no more frames, read every one the kernel took before (a ring's last block is handed over
        within its timeout), and count what could not be read: kernel received = frames + kernel dropped
        + left at stop."""
        settle_s = self.receiver.stop_receiving()
        deadline = time.monotonic() + settle_s
        while True:
            await self._read(1 << 30)
            left = self.receiver.unread()
            if not left or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.002)
        self.stats.left_at_stop += left

    async def _read(self, limit: int) -> int:
        """Take up to `limit` frames from the receiver, decode them and hand their records on; how many were taken.

        A ring read by a block engine is decoded in place (_read_blocks); otherwise the frames come as
        (capture_ns, bytes) and are decoded as one batch.
        """
        if self._blocks is not None:
            return await self._read_blocks(limit)
        frames = self._frames
        frames.clear()
        taken = self.receiver.drain(frames, limit)
        decoded = self.engine.decode_batch(frames, LINKTYPE_ETHERNET, keep_frames=self.sink.wants_frames)
        outside = self._ring.take_outside() if self._ring is not None else 0
        if outside:
            decoded.malformed[OUTSIDE_BLOCK] += outside
        await self._handle_or_stop(decoded, len(frames) + outside)
        return taken

    async def _read_blocks(self, limit: int) -> int:
        """Decode up to `limit` frames in place, a block (or what is left of it) per engine call, each block's
        records handed on before the next block is decoded: one block's output in memory at a time, not a
        wakeup's (several 9 MB outputs alive at once cost page faults); how many frames were taken."""
        assert self._blocks is not None
        ring, engine = self._blocks
        batches: list[tuple[Decoded, int]] = []

        def visit(block: memoryview, at: int, count: int) -> int:
            decoded, at = engine.decode_block(block, at, count, LINKTYPE_ETHERNET)
            batches.append((decoded, count))
            return at

        taken = 0
        while taken < limit and (got := ring.drain_blocks(visit, limit - taken, visits=1)):
            taken += got
            for decoded, count in batches:
                await self._handle_or_stop(decoded, count)
            batches.clear()
        return taken

    async def _handle_or_stop(self, decoded: Decoded, frames: int) -> None:
        """Count and hand on what `frames` frames gave; an output that cannot be written (OutputError) stops the worker.

        A full disk does not empty itself: capture stops, the records already decoded are
        counted by the sink as not written, and the caller reports `error`.
        """
        try:
            await self._handle(decoded, frames)
        except OutputError as exc:
            self.error = self.error or exc
            self.stop()

    async def _handle(self, decoded: Decoded, frames: int) -> None:
        stats, sink = self.stats, self.sink
        stats.frames += frames
        stats.not_pt += decoded.not_pt
        stats.malformed.update(decoded.malformed)
        records = decoded.records
        if records:
            stats.decoded += len(records)
            stats.batched += len(records)
            await hand_over(sink, records, decoded.frames)


async def run_worker(
    worker: Worker, report: Callable[[CollectStats], None] | None = None, interval_s: float = 5.0
) -> CollectStats:
    """Run until SIGINT or SIGTERM (or the interface goes away: `worker.error`), reporting every `interval_s`."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    reporter = asyncio.create_task(_report_every(worker, report, interval_s)) if report else None
    try:
        stats = await worker.run()
    finally:
        if reporter:
            reporter.cancel()
    # The handlers stay: another SIGTERM while the sink closes must not kill the worker (the loop's end removes them).
    return stats


async def _report_every(worker: Worker, report: Callable[[CollectStats], None], interval_s: float) -> None:
    next_at = time.monotonic() + interval_s
    while True:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval_s
        report(worker.snapshot())
        worker.check_receiver()


@dataclass(frozen=True)
class CaptureSettings:
    """Where and how to capture; see `ptc collect --help`."""

    iface: str
    mode: str = "ring"  # "ring" (TPACKET_V3) or "socket" (recv_into drain loop)
    block_size: int = DEFAULT_BLOCK_SIZE
    block_count: int = DEFAULT_BLOCK_COUNT
    block_timeout_ms: int = 100
    rcvbuf: int | None = 64 << 20
    program: tuple[tuple[int, int, int, int], ...] | None = None  # classic BPF; None: the default PT filter
    fanout_group: int | None = None
    shutdown_timeout_s: float | None = None  # how long the flush after a stop may take


Opened = tuple["SharedReceiver", Callable[[], tuple[int, int]]]  # a receiver and its kernel counters


def open_receiver(settings: CaptureSettings) -> Opened:
    """The receiver and its kernel counters (CaptureSetupError when the interface cannot be captured on)."""
    from ..capture import DEFAULT_PROGRAM, RingReceiver, SocketReceiver, kernel_stats

    program = list(settings.program) if settings.program is not None else DEFAULT_PROGRAM
    receiver: SharedReceiver
    if settings.mode == "socket":
        receiver = SocketReceiver(
            settings.iface, program=program, fanout_group=settings.fanout_group, rcvbuf=settings.rcvbuf
        )
    else:
        receiver = RingReceiver(
            settings.iface, program=program, fanout_group=settings.fanout_group,
            block_size=settings.block_size, block_count=settings.block_count,
            block_timeout_ms=settings.block_timeout_ms,
        )  # fmt: skip
    sock = receiver.sock
    return receiver, lambda: kernel_stats(sock)


class ParentReceivers:
    """The receivers a parent opens for its workers before it drops its privileges (one per worker),
    so that a worker's successor reads on from the same ring, socket and counters: what the kernel
    took for a worker while it was away waits for the next one instead of being lost."""

    def __init__(self, settings: CaptureSettings, count: int) -> None:
        self.opened: list[Opened] = []
        self.closed: set[int] = set()
        try:
            for _ in range(count):
                self.opened.append(open_receiver(settings))
        except BaseException:
            self.close()
            raise

    def taken(self, index: int) -> int:
        return self.opened[index][0].taken

    def counted(self, index: int) -> CollectStats:
        """What the kernel counted on worker `index`'s receiver since the last read (received, dropped).
        Read here, in the parent, never by the worker: the read resets them, and a worker killed between
        reading them and reporting them would take them along."""
        stats = CollectStats()
        if index not in self.closed:
            stats.kernel_received, stats.kernel_dropped = self.opened[index][1]()
        return stats

    def retire(self, index: int) -> CollectStats:
        if index in self.closed:
            return CollectStats()
        receiver = self.opened[index][0]
        receiver.stop_receiving()  # nothing more to count: what it holds now is what was left in it
        stats = self.counted(index)
        stats.left_at_stop = receiver.unread()
        receiver.close()
        self.closed.add(index)
        return stats

    def only(self, index: int) -> SharedReceiver:
        """In worker `index`'s process: its receiver, ready to read on; the others closed (in this process)."""
        for other, (receiver, _) in enumerate(self.opened):
            if other != index:
                receiver.close()
        receiver = self.opened[index][0]
        receiver.resume()
        return receiver

    def close(self) -> None:
        for index, (receiver, _) in enumerate(self.opened):
            if index not in self.closed:
                receiver.close()
        self.closed.update(range(len(self.opened)))


class Delivering(Protocol):
    """A sink that counts its own deliveries: a KafkaSink, or the flow rules' router into Kafka."""

    @property
    def counters(self) -> DeliveryCounters: ...

    @property
    def held(self) -> int: ...

    @property
    def broker_up(self) -> bool | None: ...


def kafka_delivery(sink: Delivering) -> Callable[[CollectStats], None]:
    """Fills a worker's Kafka counters from its sink's own."""

    def fill(stats: CollectStats) -> None:
        counters = sink.counters
        stats.sent, stats.acked, stats.dropped, stats.failed = (
            counters.sent, counters.acked, counters.dropped, counters.failed,
        )  # fmt: skip
        stats.pending, stats.in_flight, stats.messages, stats.kafka_errors = (
            sink.held, counters.in_flight, counters.messages, counters.errors,
        )  # fmt: skip
        stats.broker = BROKER_UNKNOWN if sink.broker_up is None else BROKER_UP if sink.broker_up else BROKER_DOWN
        stats.batch_sizes, stats.latency = counters.batch_sizes, counters.latency

    return fill


def file_delivery(sink: JsonLinesSink) -> Callable[[CollectStats], None]:
    """Fills a worker's delivery counters from its output file's: sent is handed to the file, acked written whole,
    failed not written."""

    def fill(stats: CollectStats) -> None:
        lines = sink.lines
        stats.sent, stats.acked, stats.failed = lines.written + lines.failed, lines.written, lines.failed

    return fill
