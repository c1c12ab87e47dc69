"""Several capture workers, one process each, joined by PACKET_FANOUT.

Like Fastcapa giving each receive queue its own worker: every process has
its own socket (in one fanout group, hashed by flow, so a source's probes
stay in one worker and in order), its own decoder and its own sink. The
parent only supervises: it sums the workers' counters, reports them, and
stops them together on SIGINT/SIGTERM or when one of them dies.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from .stats import CollectStats

# child(index, report) runs one worker to its end and returns its exit status;
# report(stats) sends its counters to the parent.
Child = Callable[[int, Callable[[CollectStats], None]], int]


def _run_child(child: Child, index: int, updates: Any) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):  # not the parent's handler: the worker installs its own
        signal.signal(sig, signal.SIG_DFL)
    status = child(index, lambda stats: updates.put((index, stats.to_dict())))
    raise SystemExit(status)


def run_workers(
    count: int,
    child: Child,
    post: Callable[[int, CollectStats], None],
    tick: Callable[[], None],
    say: Callable[[str], None],
    tick_s: float = 1.0,
) -> int:
    """Run `count` workers until a signal stops them or one dies: the exit status.

    Each worker's counters go to `post(index, stats)` as they come; `tick()`
    runs about every `tick_s` seconds.
    """
    context = multiprocessing.get_context("fork")
    updates = context.Queue()
    workers = [
        context.Process(target=_run_child, args=(child, i, updates), name=f"ptc-worker-{i}") for i in range(count)
    ]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid and worker.is_alive():
                worker.terminate()  # SIGTERM: the worker flushes and exits

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        for worker in workers:
            worker.start()
        next_tick = time.monotonic() + tick_s
        while any(w.is_alive() for w in workers):
            _collect_updates(updates, post, timeout=0.2)
            failed = [w for w in workers if w.exitcode not in (None, 0)]
            if failed and not stopping:
                for worker in failed:
                    say(f"worker {worker.name} (pid {worker.pid}) ended with {_how(worker)}: stopping the others")
                status = 1
                stop(signal.SIGTERM, None)
            if time.monotonic() >= next_tick:
                next_tick += tick_s
                tick()
        _collect_updates(updates, post, timeout=0)
        status = max([status] + [1 for w in workers if w.exitcode not in (0, None)])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _collect_updates(updates: Any, post: Callable[[int, CollectStats], None], timeout: float) -> None:
    try:
        index, values = updates.get(timeout=timeout) if timeout else updates.get_nowait()
        post(index, CollectStats.from_dict(values))
        while True:
            index, values = updates.get_nowait()
            post(index, CollectStats.from_dict(values))
    except queue.Empty:
        pass


def _how(worker: BaseProcess) -> str:
    code = worker.exitcode or 0
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
