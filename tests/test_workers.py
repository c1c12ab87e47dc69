"""The workers' supervisor (pt_collector.ops.workers) with fake children: no sockets, no network.

The children are real forked processes running small functions that report
counters, kill themselves, fail at once or wait to be stopped; the test's
`tick` stops the supervisor (a SIGINT to this process, which run_workers
handles) once what it waits for has happened.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import time

import pytest
from rich.console import Console

from pt_collector.ops.board import StatsBoard, stages
from pt_collector.ops.display import Display, counter_fields
from pt_collector.ops.workers import Backoff, RestartPolicy, run_workers
from pt_collector.pipeline.stats import CollectStats

FAST = RestartPolicy(first_delay_s=0.05, max_delay_s=0.2, stable_s=60.0, quick_s=5.0, max_quick=4)
DEADLINE_S = 10.0


class Run:
    """run_workers with fake children; what they posted and said, and how long it took."""

    def __init__(self, count: int, child, until=None, **kwargs) -> None:
        self.posts: list[tuple[int, CollectStats]] = []
        self.said: list[str] = []
        self.board = StatsBoard(count, kafka=True)
        started = time.monotonic()

        def post(index: int, stats: CollectStats) -> None:
            self.posts.append((index, stats))
            self.board.post(index, stats)

        def tick() -> None:
            if (until is not None and until(self)) or time.monotonic() - started > DEADLINE_S:
                os.kill(os.getpid(), signal.SIGINT)  # run_workers' handler: stop every worker

        self.status = run_workers(count, child, post, tick, self.said.append, tick_s=0.05, **kwargs)
        self.elapsed = time.monotonic() - started
        assert self.elapsed < DEADLINE_S, f"never got there: {self.said}"

    def latest(self, index: int) -> CollectStats:
        return [stats for i, stats in self.posts if i == index][-1]


def counting(frames: int, pending: int = 0) -> CollectStats:
    return CollectStats(
        kernel_received=frames, frames=frames, decoded=frames, batched=frames, sent=frames - pending,
        acked=frames - pending - 1 if pending else frames, pending=pending, messages=frames // 10,
    )  # fmt: skip


def until_stopped(index: int, report, frames: int, stop_self: bool = False) -> int:
    """A well-behaved worker: reports, waits for SIGTERM, reports its last counters, exits 0."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    report(counting(frames))
    if stop_self:  # as `kill PID` of the worker
        os.kill(os.getpid(), signal.SIGTERM)
    while not stop:
        time.sleep(0.01)
    report(counting(frames + 1))  # the last counters, after the flush
    return 0


def test_a_killed_worker_is_restarted_and_its_counters_carry_over():
    starts = multiprocessing.get_context("fork").Array("i", 2)  # per index: how many processes were started

    def child(index: int, report) -> int:
        starts[index] += 1
        if index == 1 and starts[1] == 1:
            report(counting(100, pending=12))  # 12 records held: lost when it dies
            os.kill(os.getpid(), signal.SIGKILL)
        return until_stopped(index, report, 10 * index)

    run = Run(2, child, until=lambda run: starts[1] == 2 and run.latest(1).frames > 100, policy=FAST)
    assert run.status == 0  # restarted, then stopped by the signal: a clean stop
    assert list(starts) == [1, 2]
    [line] = [line for line in run.said if "restarting" in line]
    assert line.startswith("worker 1 (pid ") and " killed by SIGKILL: restarting it in 0.05 s" in line, line
    assert line.endswith("; up to 12 records it held were lost"), line
    worker1 = [stats for i, stats in run.posts if i == 1]
    frames = [stats.frames for stats in worker1]
    assert frames == sorted(frames), frames  # never backwards, across the restart
    final = run.latest(1)
    assert (final.frames, final.restarts, final.lost, final.pending) == (100 + 11, 1, 12, 0)
    assert final.lost_sent == 1  # 88 sent, 87 acked: of the 12 held, 1 was sent, 11 were still in a batch
    assert run.latest(0).restarts == 0 and run.latest(0).frames == 1
    total = run.board.total()
    assert (total.frames, total.restarts, total.lost) == (112, 1, 12)
    batch, deliver = stages(total)[2:]
    assert (batch.drops, deliver.drops, deliver.queued) == (11, 1, 0)  # nothing stays "in flight" forever


class KernelCounters:
    """Receivers held by the parent: each read of a worker's kernel counters gives 7 received, 1 dropped."""

    def __init__(self) -> None:
        self.reads = [0, 0]
        self.retired: list[int] = []

    def taken(self, index: int) -> int:
        return 0

    def counted(self, index: int) -> CollectStats:
        self.reads[index] += 1
        return CollectStats(kernel_received=7, kernel_dropped=1)

    def retire(self, index: int) -> CollectStats:
        self.retired.append(index)
        return self.counted(index)


def test_the_parent_reads_the_kernel_counters_so_a_killed_worker_takes_none_along():
    """A worker does not read the kernel's counters of a receiver the parent holds (the read resets them):
    the parent does, on every tick and when it retires the receiver, so what the kernel counted while
    a worker was dying, dead or restarting is all in the totals."""
    starts = multiprocessing.get_context("fork").Array("i", 2)
    kernel = KernelCounters()

    def child(index: int, report) -> int:
        starts[index] += 1
        if index == 1 and starts[1] == 1:
            report(CollectStats(frames=50))
            os.kill(os.getpid(), signal.SIGKILL)
        stop: list[int] = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        while not stop:
            time.sleep(0.01)
        report(CollectStats(frames=60))  # no kernel counters: the parent holds the receiver
        return 0

    run = Run(2, child, until=lambda run: starts[1] == 2 and kernel.reads[1] > 3, policy=FAST, receivers=kernel)
    assert run.status == 0 and sorted(kernel.retired) == [0, 1]
    for index in (0, 1):
        final = run.latest(index)
        assert (final.kernel_received, final.kernel_dropped) == (7 * kernel.reads[index], kernel.reads[index])


def test_a_worker_failing_at_start_is_given_up_with_backoff():
    context = multiprocessing.get_context("fork")
    times = context.Array("d", 8)  # start times of worker 0's processes
    count = context.Value("i", 0)

    def child(index: int, report) -> int:
        if index == 1:
            return until_stopped(index, report, 5)
        times[count.value] = time.monotonic()
        count.value += 1
        return 1  # as when the interface is gone: its own error line, then status 1

    run = Run(2, child, on_exit="restart", policy=FAST)
    assert run.status == 1
    assert count.value == FAST.max_quick  # started, then restarted 3 times, then given up
    gaps = [times[i + 1] - times[i] for i in range(count.value - 1)]
    for gap, delay in zip(gaps, [0.05, 0.1, 0.2], strict=True):  # doubling, up to max_delay_s
        assert delay <= gap < delay + 1.0, gaps
    restarting = [line for line in run.said if "restarting" in line]
    assert len(restarting) == 3 and all("exited with status 1" in line for line in restarting)
    assert run.said[-1].startswith("worker 0 (pid ")
    assert run.said[-1].endswith(
        "exited with status 1: 4 failures in a row, each within 5 s of starting: giving up, stopping the others; "
        "it held no records"
    ), run.said[-1]
    assert run.latest(0).restarts == 3
    assert run.latest(1).frames == 6  # the other one was stopped cleanly: its last report arrived


def test_stop_mode_stops_the_others_and_fails():
    def child(index: int, report) -> int:
        if index == 0:
            report(counting(50, pending=3))
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGKILL)
        return until_stopped(index, report, 7)

    run = Run(3, child, on_exit="stop", policy=FAST)
    assert run.status == 1
    [line] = run.said
    assert line.startswith("worker 0 (pid ")
    assert line.endswith(
        " killed by SIGKILL: stopping the others (--on-worker-exit stop); up to 3 records it held were lost"
    )
    assert [run.latest(i).frames for i in range(3)] == [50, 8, 8]  # the others flushed and reported
    assert run.board.total().restarts == 0 and run.board.total().lost == 3


def test_a_worker_stopped_by_its_own_signal_is_not_restarted():
    def child(index: int, report) -> int:
        return until_stopped(index, report, 1, stop_self=index == 1)  # worker 1: flushes, exits 0

    seen = []
    run = Run(2, child, until=lambda run: seen.append(1) or len(seen) > 10, policy=FAST)
    assert run.status == 0
    [line] = run.said
    assert "worker 1 (pid " in line and "exited with status 0: stopped by a signal sent to it, not restarted" in line
    assert run.board.total().restarts == 0


def test_a_worker_ended_by_the_stop_signal_itself_is_a_clean_stop():
    """A signal to the whole process group (Ctrl-C, systemd's stop) can reach a worker that has already
    flushed and given up its handlers before the parent's SIGTERM does: the default action ends it."""

    def child(index: int, report) -> int:
        report(counting(40, pending=5))  # a report from before the flush
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        while not stop:
            time.sleep(0.01)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # flushed, handlers removed; then the next SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return 0

    seen = []
    run = Run(2, child, until=lambda run: seen.append(1) or len(seen) > 4, policy=FAST)
    assert run.status == 0 and run.said == []
    assert run.board.total().lost == 0 and run.board.total().frames == 80


def test_a_stop_while_a_restart_waits_restarts_nothing():
    starts = multiprocessing.get_context("fork").Value("i", 0)
    slow = RestartPolicy(first_delay_s=30.0)

    def child(index: int, report) -> int:
        starts.value += 1
        os.kill(os.getpid(), signal.SIGKILL)

    run = Run(1, child, until=lambda run: bool(run.said), policy=slow)
    assert run.elapsed < 5 and starts.value == 1
    assert run.said[0].endswith("killed by SIGKILL: restarting it in 30 s; it held no records")
    assert run.status == 0


def test_backoff_doubles_caps_and_resets():
    backoff = Backoff(RestartPolicy())  # 0.5 s doubling to 30 s; reset after 60 s; 5 quick failures
    assert [backoff.after(10.0) for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]  # 10 s: not quick
    assert backoff.after(61.0) == 0.5  # it had run a while: start again from the first delay
    assert backoff.after(61.0) == 0.5
    assert [backoff.after(0.1) for _ in range(5)] == [1, 2, 4, 8, None]  # 5 failures to start in a row
    backoff = Backoff(RestartPolicy())
    assert [backoff.after(0.1) for _ in range(4)] == [0.5, 1, 2, 4]
    assert backoff.after(10.0) == 8  # it started: the count of quick failures restarts ...
    assert [backoff.after(0.1) for _ in range(5)] == [16, 30, 30, 30, None]  # ... but the delay goes on


def test_the_supervisor_rejects_an_unknown_policy():
    with pytest.raises(ValueError, match="on_exit"):
        run_workers(1, lambda index, report: 0, lambda i, s: None, lambda: None, print, on_exit="ignore")


def test_counters_lines_and_metrics_show_restarts_and_lost():
    from pt_collector.ops.metrics import BoardCollector

    stats = counting(100)
    stats.restarts, stats.lost = 2, 12
    assert stats.line().endswith("| 2 worker restarts, 12 lost")
    assert "restarts" not in counting(100).line()  # a worker that never died: the line as before
    board = StatsBoard(2, kafka=False)
    board.post(1, stats)
    samples = {
        (s.name, s.labels.get("worker")): s.value for family in BoardCollector(board).collect() for s in family.samples
    }
    assert samples[("ptc_worker_restarts_total", "1")] == 2 and samples[("ptc_records_lost_total", "1")] == 12
    assert samples[("ptc_worker_restarts_total", "0")] == 0
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(Display(board, "eth9", live=False, interval_s=5).table())
    text = console.export_text()
    assert "│ worker 1 (2 restarts) │" in text and "│ worker 0              │" in text, text
    assert "worker restarts: 2; up to 12 records lost with the dead workers" in text
    fields = counter_fields(board.total())
    assert (fields["restarts"], fields["lost"]) == (2, 12)  # in the JSON log lines too
