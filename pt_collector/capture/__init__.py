"""Live capture: frames from a network interface, as (capture time in ns, frame bytes).

Two receivers with one interface, for an event loop's add_reader(fileno()):
`RingReceiver` (a TPACKET_V3 ring) and `SocketReceiver` (one recv() per
frame). Each opens its own packet socket with `open_packet_socket`, which
filters in the kernel with classic BPF: `DEFAULT_PROGRAM` passes only frames
that can be PT probes; `compile_expression` makes a program of a tcpdump expression.

    receiver = RingReceiver("eth1", fanout_group=7)  # program=DEFAULT_PROGRAM
    frames = []
    receiver.drain(frames, 4096)  # when fileno() polls readable
    received, dropped = kernel_stats(receiver.sock)  # since the last call
"""

from __future__ import annotations

import socket
from typing import Protocol, runtime_checkable

from .bpf import DEFAULT_PROGRAM, FilterError, Program, attach_filter, compile_expression
from .packet_socket import Captured, CaptureSetupError, Frames, SocketReceiver, kernel_stats, open_packet_socket
from .ring import OUTSIDE_BLOCK, BlockVisit, RingReceiver


class Receiver(Protocol):
    """What the collect loop needs from a receiver; `sock` is for kernel_stats()."""

    sock: socket.socket

    def fileno(self) -> int: ...

    def drain(self, out: Frames, limit: int) -> int: ...

    def check_interface(self) -> None: ...

    def stop_receiving(self) -> float: ...

    def unread(self) -> int: ...

    def ring_use(self) -> float:
        """The share of its ring's blocks waiting for user space (0.0 without a ring)."""
        ...


@runtime_checkable
class BlockReceiver(Protocol):
    """A receiver whose frames can be read in place, a block at a time: the ring receiver (the mapped ring's
    blocks), the socket receiver (its frames read into one buffer laid out as a block)."""

    def drain_blocks(self, visit: BlockVisit, limit: int, visits: int | None = None) -> int:
        """Up to `limit` frames handed to `visit` a block at a time, in at most `visits` calls; frames taken."""
        ...

    def take_outside(self) -> int:
        """Frames drain() took but could not read (outside their block): to count as malformed (OUTSIDE_BLOCK)."""
        ...


class SharedReceiver(Receiver, Protocol):
    """A receiver opened by a parent and read by its forked workers, one after another (`--workers`)."""

    @property
    def taken(self) -> int: ...

    def resume(self) -> None: ...

    def close(self) -> None: ...


__all__ = [
    "DEFAULT_PROGRAM",
    "OUTSIDE_BLOCK",
    "BlockReceiver",
    "BlockVisit",
    "CaptureSetupError",
    "Captured",
    "FilterError",
    "Frames",
    "Program",
    "Receiver",
    "RingReceiver",
    "SharedReceiver",
    "SocketReceiver",
    "attach_filter",
    "compile_expression",
    "kernel_stats",
    "open_packet_socket",
]
