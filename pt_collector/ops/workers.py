"""Several capture workers, one process each, joined by PACKET_FANOUT.

Like Fastcapa giving each receive queue its own worker: every process has
its own socket (in one fanout group, hashed by flow, so a source's probes
stay in one worker and in order), its own decoder and its own sink. The
parent only supervises: it sums the workers' counters, reports them, stops
them together on SIGINT/SIGTERM, and when one of them dies it restarts it
(the new process reads on from the same socket, which the caller opened
before and keeps: `Receivers`) or, with `on_exit="stop"`, stops the others
and fails.

Each worker reports its counters over a pipe of its own: a worker killed
mid-write cannot block the others (as it could holding a shared queue's
lock), and what a dead worker last said is read to the end before its
successor starts counting from zero on top of it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from ..pipeline.stats import CollectStats

# child(index, report) runs one worker to its end and returns its exit status;
# report(stats) sends its counters to the parent.
Child = Callable[[int, Callable[[CollectStats], None]], int]
ON_EXIT = ("restart", "stop")  # what the parent does when a worker ends unexpectedly
EXIT_FATAL = 3  # a worker's exit status for a failure no restart can mend (its output cannot be written)


class Receivers(Protocol):
    """The capture receivers the parent opened, one per worker, read by that worker's processes in turn."""

    def taken(self, index: int) -> int:
        """Frames taken from worker `index`'s receiver so far, by all its processes."""
        ...

    def counted(self, index: int) -> CollectStats:
        """What the kernel counted on worker `index`'s receiver since the last read (received, dropped)."""
        ...

    def retire(self, index: int) -> CollectStats:
        """Worker `index` runs no more: close its receiver; what the kernel counted on it since its last
        read (kernel received, dropped) and the frames still unread in it (left_at_stop)."""
        ...


@dataclass(frozen=True)
class RestartPolicy:
    """How soon a worker that died is restarted, and when restarting it is given up."""

    first_delay_s: float = 0.5  # the first restart waits this long, each next one twice as long ...
    max_delay_s: float = 30.0  # ... up to this
    stable_s: float = 60.0  # a worker that ran this long before it died starts again from first_delay_s
    quick_s: float = 5.0  # a worker that died within this of starting failed to start ...
    max_quick: int = 5  # ... and after this many such failures in a row, the parent gives up


class Backoff:
    """One worker's restart delays under a RestartPolicy; times are given, so it is pure."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.delay = policy.first_delay_s
        self.quick = 0  # failures to start, in a row

    def after(self, ran_s: float) -> float | None:
        """A worker that ran `ran_s` seconds died: wait this long before restarting it, or None: give up."""
        policy = self.policy
        if ran_s >= policy.stable_s:
            self.delay = policy.first_delay_s
        self.quick = self.quick + 1 if ran_s < policy.quick_s else 0
        if self.quick >= policy.max_quick:
            return None
        delay, self.delay = self.delay, min(policy.max_delay_s, self.delay * 2)
        return delay


class _Slot:
    """Worker `index`: its current process, and what the processes before it left."""

    def __init__(self, index: int, policy: RestartPolicy) -> None:
        self.index = index
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None  # its counters come over this pipe
        self.started = 0.0
        self.base = CollectStats()  # the counters of the dead processes, carried over
        self.current = CollectStats()  # the latest report of the running one
        self.restart_at: float | None = None
        self.backoff = Backoff(policy)

    def total(self) -> CollectStats:
        total = self.base.copy()
        total.add(self.current)
        return total


def _run_child(child: Child, index: int, conn: Connection) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):  # not the parent's handler: the worker installs its own
        signal.signal(sig, signal.SIG_DFL)

    def report(stats: CollectStats) -> None:
        with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
            conn.send(stats.to_dict())

    status = child(index, report)
    raise SystemExit(status)


class _Supervisor:
    def __init__(
        self,
        count: int,
        child: Child,
        post: Callable[[int, CollectStats], None],
        say: Callable[[str], None],
        on_exit: str,
        policy: RestartPolicy,
        receivers: Receivers | None = None,
    ) -> None:
        if on_exit not in ON_EXIT:
            raise ValueError(f"on_exit must be one of {ON_EXIT}")
        self.context = multiprocessing.get_context("fork")
        self.child, self.post, self.say, self.on_exit, self.policy = child, post, say, on_exit, policy
        self.receivers = receivers
        self.retired: set[int] = set()
        self.slots = [_Slot(i, policy) for i in range(count)]
        self.stopping = False
        self.status = 0

    def stop(self, signum: int = signal.SIGTERM, frame: object = None) -> None:
        """Stop every worker (SIGTERM: each flushes and exits) and restart none; also the signal handler."""
        self.stopping = True
        for slot in self.slots:
            slot.restart_at = None
            if slot.process is not None and slot.process.is_alive():
                slot.process.terminate()

    def start(self, slot: _Slot) -> None:
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_run_child, args=(self.child, slot.index, writer), name=f"ptc-worker-{slot.index}"
        )
        process.start()
        writer.close()  # the worker holds the only writing end: its death is the pipe's end
        slot.process, slot.conn, slot.started = process, reader, time.monotonic()
        slot.current, slot.restart_at = CollectStats(), None
        if self.stopping:  # a signal came while it started, before the handler could see it
            process.terminate()

    def run(self, tick: Callable[[], None], tick_s: float) -> int:
        for slot in self.slots:
            self.start(slot)
        next_tick = time.monotonic() + tick_s
        while True:
            now = time.monotonic()
            for slot in self.slots:
                if slot.restart_at is not None and now >= slot.restart_at:
                    slot.base.restarts += 1
                    self.start(slot)
                    self.post(slot.index, slot.total())
            running = [slot for slot in self.slots if slot.process is not None]
            waiting = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
            if not running and not waiting:
                break
            ready = wait(
                [slot.conn for slot in running if slot.conn is not None]
                + [slot.process.sentinel for slot in running if slot.process is not None],
                timeout=max(0.0, min([next_tick, *waiting]) - time.monotonic()),
            )
            for slot in running:
                if slot.conn is not None and slot.conn in ready:
                    self.receive(slot)
            for slot in running:
                if slot.process is not None and slot.process.sentinel in ready:
                    self.ended(slot)
            if time.monotonic() >= next_tick:
                while next_tick <= time.monotonic():
                    next_tick += tick_s
                self.count_kernel()
                tick()
        for slot in self.slots:  # those that were to restart when the stop came
            self.retire(slot)
        return self.status

    def count_kernel(self) -> None:
        """The kernel's counters of each worker's receiver, read by the parent, which holds them all."""
        if self.receivers is None:
            return
        for slot in self.slots:
            if slot.index not in self.retired:
                slot.base.add(self.receivers.counted(slot.index))
                self.post(slot.index, slot.total())

    def retire(self, slot: _Slot) -> None:
        """The worker runs no more: its receiver closes (a fanout group spreads its flows over the others),
        and what the kernel counted on it since the last read is added to its counters."""
        if self.receivers is None or slot.index in self.retired:
            return
        self.retired.add(slot.index)
        slot.base.add(self.receivers.retire(slot.index))
        self.post(slot.index, slot.total())

    def receive(self, slot: _Slot) -> None:
        """Read what the worker reported so far (all of it, to the end once the worker is dead)."""
        conn = slot.conn
        assert conn is not None
        latest: dict[str, Any] | None = None
        try:
            while conn.poll():
                latest = conn.recv()
        except (EOFError, OSError):  # the worker is gone (OSError: it died in the middle of a report)
            conn.close()
            slot.conn = None
        if latest is not None:
            slot.current = CollectStats.from_dict(latest)
            self.post(slot.index, slot.total())

    def ended(self, slot: _Slot) -> None:
        process = slot.process
        assert process is not None
        process.join()
        while slot.conn is not None:
            self.receive(slot)
        ran_s = time.monotonic() - slot.started
        code = process.exitcode or 0
        if self.stopping and code in (-signal.SIGTERM, -signal.SIGINT):
            # Told to stop, and a stop signal ended it: a worker handles these while it captures and
            # flushes, so this one came before it took any record, or after it flushed them all (as when
            # a signal to the whole process group beats the parent's SIGTERM): nothing was lost.
            slot.current.pending = 0
            code = 0
        held, unreported = slot.current.pending, self.unreported(slot)
        behind = slot.current.left_behind()
        behind.frames += unreported  # read from the ring, never reported: what became of them nobody knows
        behind.unreported += unreported
        slot.base.add(behind)  # its successor counts on from here: totals never go back
        slot.current, slot.process = CollectStats(), None
        self.post(slot.index, slot.total())
        who = f"worker {slot.index} (pid {process.pid}) {_how(code)}"
        lost = _lost(held, unreported)
        if self.stopping:
            self.retire(slot)
            if code != 0:
                self.status = 1
                self.say(who if code == EXIT_FATAL else f"{who} while stopping; {lost}")
            return
        if code == 0:  # it was stopped on purpose (SIGINT or SIGTERM sent to it) and flushed
            self.retire(slot)
            self.say(f"{who}: stopped by a signal sent to it, not restarted; the other workers take its flows")
            return
        if code == EXIT_FATAL:  # a full disk: a restarted worker would only fail again, with what it decoded
            self.retire(slot)
            self.say(f"{who}: not restarted, stopping the others")
            self.status = 1
            self.stop()
            return
        if self.on_exit == "stop":
            self.retire(slot)
            self.say(f"{who}: stopping the others (--on-worker-exit stop); {lost}{self.left(slot)}")
            self.status = 1
            self.stop()
            return
        delay = slot.backoff.after(ran_s)
        if delay is None:
            self.retire(slot)
            self.say(
                f"{who}: {slot.backoff.quick} failures in a row, each within {self.policy.quick_s:g} s of "
                f"starting: giving up, stopping the others; {lost}{self.left(slot)}"
            )
            self.status = 1
            self.stop()
            return
        kept = "; the frames in its ring wait for its successor" if self.receivers is not None else ""
        self.say(f"{who}: restarting it in {delay:g} s; {lost}{kept}")
        slot.restart_at = time.monotonic() + delay

    def unreported(self, slot: _Slot) -> int:
        """Frames the dead worker took from its receiver after its last report (0 without shared receivers)."""
        if self.receivers is None:
            return 0
        reported = slot.base.frames + slot.current.frames
        return max(0, self.receivers.taken(slot.index) - reported)

    def left(self, slot: _Slot) -> str:
        left = slot.base.left_at_stop
        return f"; {left:,} frames left unread in its ring" if self.receivers is not None and left else ""


def run_workers(
    count: int,
    child: Child,
    post: Callable[[int, CollectStats], None],
    tick: Callable[[], None],
    say: Callable[[str], None],
    tick_s: float = 1.0,
    on_exit: str = "restart",
    policy: RestartPolicy = RestartPolicy(),
    receivers: Receivers | None = None,
) -> int:
    """Run `count` workers until a signal stops them (or, see `on_exit`, one dies): the exit status.

    Each worker's counters go to `post(index, stats)` as they come, added to what its dead
    predecessors counted; `tick()` runs about every `tick_s` seconds. A worker that ends
    unexpectedly (killed, or a status other than 0) is restarted after a backoff (`on_exit="restart"`),
    up to `policy.max_quick` failures to start in a row; or (`on_exit="stop"`) the others are
    stopped. A worker that exits with EXIT_FATAL is never restarted: the others are stopped.
    Either way one line goes to `say`. The status is 1 when the parent gave up or stopped
    the others, or a worker failed while stopping; 0 otherwise. With `receivers` (opened by the
    caller before, shared by each worker's processes in turn), a dead worker's frames read after its
    last report are counted (`unreported`), and a worker that runs no more has its receiver retired.
    """
    supervisor = _Supervisor(count, child, post, say, on_exit, policy, receivers)
    previous = {sig: signal.signal(sig, supervisor.stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return supervisor.run(tick, tick_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _lost(held: int, unreported: int) -> str:
    if not held and not unreported:
        return "it held no records"
    if not unreported:
        return f"up to {held:,} records it held were lost"
    return (
        f"up to {held + unreported:,} records were lost: {held:,} it held at its last report, "
        f"and those of the {unreported:,} frames it read since"
    )


def _how(code: int) -> str:
    if code == EXIT_FATAL:
        return "stopped: its output cannot be written"
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
