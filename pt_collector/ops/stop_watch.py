"""A stop that cannot hang: once SIGTERM or SIGINT arrives, the process is gone within a time limit.

Python runs a signal's handler in the main thread between two bytecodes,
so a main thread stuck inside a C call (a Kafka client's call that does
not return, say) never runs it, and the process ignores the stop. The
C-level handler still writes the signal's number to the wakeup file
descriptor (`signal.set_wakeup_fd`): a watcher thread reads it there,
waits the limit out, and if the process is still running says so and
exits with status 0 (a stop was asked for, and it stopped).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable

STOPS = (signal.SIGTERM, signal.SIGINT)
_kept: list[socket.socket] = []  # the wakeup socket pair, open for the life of the process


def bound_stop(limit_s: float, on_overrun: Callable[[float], None]) -> None:
    """Arm it (from the main thread, once): after a stop signal, `on_overrun(limit_s)` then exit 0 if still alive."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)

    def watch() -> None:
        while data := reader.recv(64):
            if any(number in STOPS for number in data):
                time.sleep(limit_s)
                on_overrun(limit_s)
                os._exit(0)

    _kept.extend((reader, writer))
    threading.Thread(target=watch, name="ptc-stop-watch", daemon=True).start()
