"""Live capture on a Linux packet socket: opening it, its kernel counters, and plain receiving.

Frames arrive as (capture time in ns since the epoch, frame bytes) starting
at the Ethernet header. The receive path has moved the outer 802.1Q /
802.1ad tag into packet metadata, so a tagged frame arrives without it (a
QinQ frame keeps its inner tag); the IPv6 packet inside is untouched, which
is all the decoder needs.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import socket
import struct
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from .bpf import DEFAULT_PROGRAM, RET_K, FilterError, Program, attach_filter

# <linux/if_packet.h>, <linux/if_ether.h>, <asm-generic/socket.h>, <linux/sockios.h>, <linux/if.h>
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFF_RUNNING = 0x40  # the operational state is up: carrier and lower layers

TAKEN = struct.Struct("=Q")
# struct tpacket3_hdr up to tp_mac, as drain_blocks lays frames out: tp_next_offset, tp_sec, tp_nsec, tp_snaplen,
# tp_len, (tp_status), tp_mac (the frame's offset from its header), padded to 32 bytes
BLOCK_FRAME = struct.Struct("=IIIII4xH6x")
BLOCK_BYTES = 4 << 20  # drain_blocks' buffer: frames are handed on whenever it could not hold one more of MAX_FRAME
TPACKET_STATS = struct.Struct("II")  # tp_packets, tp_drops (tpacket_stats_v3 adds tp_freeze_q_cnt after)
IFREQ_FLAGS = struct.Struct("16sH14x")  # struct ifreq: name, ifr_flags, rest of the union
MAX_FRAME = 262144  # receive buffer: frames up to tcpdump's largest snap length arrive whole
DEFAULT_RCVBUF = 16 << 20  # some 20k queued probes before the kernel drops; the default 208 KiB holds 250

Captured = tuple[int, bytes]  # (capture time in ns since the epoch, frame bytes): one frame as a receiver drains it
Frames = list[Captured]
REJECT_ALL: Program = [(RET_K, 0, 0, 0)]  # a filter that takes no frame: nothing more is queued, nor counted


class CaptureSetupError(Exception):
    """Capturing on an interface cannot start or go on; the message is one line for the operator."""


def open_packet_socket(
    iface: str,
    *,
    rcvbuf: int | None = None,
    fanout_group: int | None = None,
    program: Program | None = None,
    before_bind: Callable[[socket.socket], None] | None = None,
) -> socket.socket:
    """A non-blocking AF_PACKET raw socket receiving every frame that arrives on `iface`.

    `program` (classic BPF) is attached before the socket is bound, so no frame
    it rejects ever reaches user space; None captures everything. Frames the
    host itself sends are ignored: a probe is counted once, on arrival.
    `fanout_group` joins a PACKET_FANOUT group that spreads frames by flow
    hash, so one source's probes stay with one socket. `before_bind` runs on the
    socket before it starts receiving: the ring receiver sets up its ring there.
    """
    _check_usable(iface)
    try:
        # protocol 0: no frame is queued until bind() names the protocol, so the filter comes first
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
    except PermissionError:
        raise CaptureSetupError(
            f"capturing on {iface} needs CAP_NET_RAW (run as root or grant the capability)"
        ) from None
    try:
        _configure(sock, iface, rcvbuf, program)
        if before_bind is not None:
            before_bind(sock)
        _bind(sock, iface)
        if fanout_group is not None:
            _join_fanout(sock, iface, fanout_group)
    except BaseException:
        sock.close()
        raise
    return sock


def _check_usable(iface: str) -> None:
    try:
        socket.if_nametoindex(iface)
    except OSError:
        raise CaptureSetupError(f"no interface named {iface}") from None
    flags = _interface_flags(iface)
    if not flags & IFF_UP:
        raise CaptureSetupError(f"interface {iface} is down")
    if not flags & IFF_RUNNING:
        raise CaptureSetupError(f"interface {iface} is up but has no link (no carrier)")


def _interface_flags(iface: str) -> int:
    """SIOCGIFFLAGS, which needs no privilege (any socket will do)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            answer = fcntl.ioctl(probe, SIOCGIFFLAGS, IFREQ_FLAGS.pack(iface.encode(), 0))
        except OSError:
            raise CaptureSetupError(f"no interface named {iface}") from None
    return IFREQ_FLAGS.unpack(answer)[1]


def _configure(sock: socket.socket, iface: str, rcvbuf: int | None, program: Program | None) -> None:
    if program is not None:
        try:
            attach_filter(sock, program)
        except FilterError as e:
            raise CaptureSetupError(f"capture on {iface}: {e}") from None
        _discard_queued(sock)
    if rcvbuf is not None:
        _set_rcvbuf(sock, rcvbuf)
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)


def _discard_queued(sock: socket.socket) -> None:
    """Frames queued before the filter was attached; none with protocol 0, but cheap to be sure."""
    while True:
        try:
            sock.recv(1)
        except BlockingIOError:
            return


def _set_rcvbuf(sock: socket.socket, size: int) -> None:
    """SO_RCVBUFFORCE passes net.core.rmem_max but needs CAP_NET_ADMIN; SO_RCVBUF is capped by it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _bind(sock: socket.socket, iface: str) -> None:
    try:
        sock.bind((iface, ETH_P_ALL))
    except OSError as e:
        if e.errno in (errno.ENODEV, errno.ENXIO):
            raise CaptureSetupError(f"no interface named {iface}") from None
        if e.errno == errno.ENETDOWN:
            raise CaptureSetupError(f"interface {iface} is down") from None
        raise CaptureSetupError(f"binding a capture socket to {iface} failed: {e.strerror}") from None


def _join_fanout(sock: socket.socket, iface: str, group: int) -> None:
    if not 0 <= group <= 0xFFFF:
        raise CaptureSetupError(f"fanout group {group} is not in 0..65535")
    mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG
    try:
        sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("=I", group | mode << 16))  # above INT_MAX
    except OSError as e:
        raise CaptureSetupError(
            f"cannot join fanout group {group} on {iface}: {e.strerror}"
            " (is the group used by another interface, mode or ring setting?)"
        ) from None


def kernel_stats(sock: socket.socket) -> tuple[int, int]:
    """(packets, drops) since the last call: the kernel resets its counters on every read.

    `packets` counts every frame the filter accepted, the dropped ones included;
    `drops` those lost because the socket buffer or ring was full.
    """
    raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)  # the larger tpacket_stats_v3
    packets, drops = TPACKET_STATS.unpack_from(raw)
    return packets, drops


def check_interface(iface: str, ifindex: int) -> None:
    """Raise if `iface` was deleted (or replaced by a namesake) since the socket was bound to `ifindex`.

    The kernel tells a packet socket only that its link went down, never that the
    interface is gone, and then delivers nothing: a long-running capture checks now and then.
    """
    try:
        now = socket.if_nametoindex(iface)
    except OSError:
        now = 0
    if now != ifindex:
        raise CaptureSetupError(f"interface {iface} went away")


def clear_socket_error(sock: socket.socket, iface: str, ifindex: int) -> None:
    """Read (so clear) a pending socket error, which would otherwise keep poll reporting readable.

    The error is ENETDOWN when the link went down: delivery resumes when it comes back up.
    """
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
        check_interface(iface, ifindex)


class BoundReceiver:
    """What both receivers share: a packet socket bound to `iface` (index `ifindex`), closed on exit."""

    iface: str
    ifindex: int
    sock: socket.socket

    def stop_receiving(self) -> float:
        """Take no more frames: the kernel neither queues nor counts any from now on (PACKET_STATISTICS
        stays put). What it took before is still to be drained: within the seconds returned."""
        attach_filter(self.sock, REJECT_ALL)
        return 0.0

    def unread(self) -> int:
        """Frames the kernel took and a drain cannot reach yet (a ring's block still being filled)."""
        return 0

    def resume(self) -> None:
        """Take over from another process that read this receiver (and may have died anywhere)."""

    def ring_use(self) -> float:
        return 0.0  # a plain socket has no ring

    def check_interface(self) -> None:
        """Raise CaptureSetupError if the interface was deleted: nothing would ever arrive again."""
        check_interface(self.iface, self.ifindex)

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class SocketReceiver(BoundReceiver):
    """The plain receiver: recv() frame by frame from the socket's queue (`--capture socket`).

    One system call per frame, which the ring receiver avoids. The capture time
    is the host clock when recv() returns: under 0.1 us a frame, where the
    kernel's own receive time (SO_TIMESTAMPNS through recvmsg) costs about 2 us more.
    `program` None captures every frame.
    """

    def __init__(
        self,
        iface: str,
        *,
        program: Program | None = DEFAULT_PROGRAM,
        fanout_group: int | None = None,
        rcvbuf: int | None = DEFAULT_RCVBUF,
    ) -> None:
        self.iface = iface
        self.sock = open_packet_socket(iface, rcvbuf=rcvbuf, fanout_group=fanout_group, program=program)
        self.ifindex = socket.if_nametoindex(iface)
        self._buffer = bytearray(MAX_FRAME)
        self._view = memoryview(self._buffer)
        self._block = memoryview(bytearray(BLOCK_BYTES))  # drain_blocks' frames, laid out as a ring block
        self._taken = mmap.mmap(-1, TAKEN.size)  # shared with the processes forked after: see `taken`

    @property
    def taken(self) -> int:
        """Frames taken from the socket so far, by this process and any other forked after it was opened."""
        return TAKEN.unpack_from(self._taken)[0]

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self, out: Frames, limit: int) -> int:
        """Append up to `limit` queued frames to `out`; how many were appended."""
        recv_into, view, append, now = self.sock.recv_into, self._view, out.append, time.time_ns
        taken, shared, store = self.taken, self._taken, TAKEN.pack_into
        count = 0
        try:
            while count < limit:
                size = recv_into(view)
                append((now(), view[:size].tobytes()))
                count += 1
                store(shared, 0, taken + count)  # a frame out of the queue is counted at once, for the parent
        except BlockingIOError:
            pass
        except OSError as e:
            self._failed(e)
        return count

    def _failed(self, e: OSError) -> None:
        """A receive failed: the link went down (delivery resumes when it is back up), or capture cannot go on."""
        if e.errno != errno.ENETDOWN:
            raise CaptureSetupError(f"capture on {self.iface} failed: {e.strerror}") from None
        check_interface(self.iface, self.ifindex)

    def drain_blocks(self, visit: Callable[[memoryview, int, int], int], limit: int, visits: int | None = None) -> int:
        """Read up to `limit` queued frames into one buffer laid out as a TPACKET_V3 block (each frame behind a
        tpacket3_hdr: its length, its capture time) and hand it to `visit(block, 0, count)` (the ring receiver's
        drain_blocks contract), each time it is full (at most `visits` times) and at the end: no bytes object
        per frame."""
        recv_into, block, now, header = self.sock.recv_into, self._block, time.time_ns, BLOCK_FRAME.pack_into
        taken, shared, store = self.taken, self._taken, TAKEN.pack_into
        end, room = len(block), BLOCK_FRAME.size + MAX_FRAME
        count = in_block = at = visited = 0
        try:
            while count < limit:
                if at + room > end:
                    visit(block[:at], 0, in_block)
                    in_block = at = 0
                    visited += 1
                    if visited == visits:
                        break
                size = recv_into(block[at + BLOCK_FRAME.size : at + room])
                ns, step = now(), BLOCK_FRAME.size + size + 15 & ~15
                header(block, at, step, ns // 1_000_000_000, ns % 1_000_000_000, size, size, BLOCK_FRAME.size)
                at += step
                in_block += 1
                count += 1
                store(shared, 0, taken + count)  # a frame out of the queue is counted at once, for the parent
        except BlockingIOError:
            pass
        except OSError as e:
            self._failed(e)
        finally:
            if in_block:
                visit(block[:at], 0, in_block)
        return count

    def take_outside(self) -> int:
        """Frames outside their block: never, the blocks are laid out here."""
        return 0

    def close(self) -> None:
        self._view.release()
        self._block.release()
        self._taken.close()
        self.sock.close()
