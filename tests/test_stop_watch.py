"""A stop that cannot hang (ops/stop_watch.py, armed by `ptc analyze`): gone within its limit after SIGTERM,
even with the main thread stuck where Python never runs the signal's handler, and the stuck case without it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

STUCK = """
import ctypes, signal, sys
from pt_collector.ops.stop_watch import bound_stop
signal.signal(signal.SIGTERM, lambda *_: None)  # as Quix Streams' handler: a flag for a loop that never reads it
if sys.argv[1] == "armed":
    bound_stop(1.0, lambda limit_s: print(f"not stopped {limit_s:.0f} s after the signal", flush=True))
print("ready", flush=True)
while True:
    ctypes.CDLL(None).sleep(1000)  # inside C; a signal only cuts one sleep short
"""


def start(mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", STUCK, mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


@pytest.mark.parametrize("mode", ["armed", "not armed"])
def test_a_stuck_main_thread_still_stops_within_the_limit(mode):
    proc = start(mode)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(6)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        assert mode == "not armed", "the armed process ignored SIGTERM"  # the control: stuck without it
        return
    assert mode == "armed", "the control stopped by itself: this test shows nothing"
    assert code == 0 and 0.9 <= time.monotonic() - started < 5
    assert proc.stdout.read() == "not stopped 1 s after the signal\n"
