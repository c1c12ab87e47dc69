"""The ring receiver: a PACKET_MMAP TPACKET_V3 receive ring shared with the kernel.

The kernel writes frames back to back into fixed-size blocks and hands a
block to user space ("retires" it) when it is full or `block_timeout_ms`
after its first frame; only then does the socket poll readable. Reading a
block costs no system call, and its frames carry the kernel's receive time.

As on any packet socket, the outer 802.1Q / 802.1ad tag arrives in the
frame header's metadata (tp_vlan_tci), not in the frame: a tagged frame is
delivered without it, a QinQ frame with its inner tag only. The IPv6 packet
is intact, which is all the decoder needs.
"""

from __future__ import annotations

import mmap
import socket
import struct
from collections.abc import Callable

from .bpf import DEFAULT_PROGRAM, Program
from .packet_socket import (
    SOL_PACKET,
    BoundReceiver,
    CaptureSetupError,
    Frames,
    clear_socket_error,
    open_packet_socket,
)

# <linux/if_packet.h>
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
FRAME_SIZE = 2048  # nominal: V3 packs frames by their real size; the kernel only checks the arithmetic

# struct tpacket_req3: block_size, block_nr, frame_size, frame_nr, retire_blk_tov (ms), sizeof_priv, feature_req_word
TPACKET_REQ3 = struct.Struct("7I")
# struct tpacket_block_desc: version @0, offset_to_priv @4, then tpacket_hdr_v1: block_status @8,
# num_pkts @12, offset_to_first_pkt @16, blk_len @20, seq_num @24, ts_first_pkt @32, ts_last_pkt @40
BLOCK_STATUS_OFFSET = 8
BLOCK_HEADER = struct.Struct("=III")  # block_status, num_pkts, offset_to_first_pkt (read at offset 8)
BLOCK_STATUS = struct.Struct("=I")
BLOCK_SEQ = struct.Struct("=Q")  # seq_num @24: the kernel numbers the blocks as it opens them
BLOCK_SEQ_OFFSET = 24
# Where reading stands, in memory shared with every process forked after the ring was set up, so a
# worker that takes over the ring of a dead one goes on where it stopped: the next block to read (in
# the kernel's fill order), frames still to read in the block in hand (0: none in hand), the ring
# offset of the next frame header in it, and the frames taken from the ring so far (by every process).
READ_STATE = struct.Struct("=IIQQ")
# struct tpacket3_hdr: tp_next_offset @0, tp_sec @4, tp_nsec @8, tp_snaplen @12, tp_len @16,
# tp_status @20, tp_mac @24, tp_net @26, hv1 (rxhash, vlan_tci, vlan_tpid) @28; we read up to tp_mac
FRAME_HEADER = struct.Struct("=IIII8xH")  # tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_mac
# A frame that its header places (partly) outside its block is not read but counted as malformed by this key, and
# so is every frame after a header that is outside (no telling where they are): as native/src/block.rs counts them.
OUTSIDE_BLOCK = "ring: frame outside its block"
# visit(block, at, count) -> at: reads `count` frames of `block` (a memoryview of one block of the mapped ring, valid
# only during the call) from the frame header at offset `at` in it; returns the offset of the next frame header.
BlockVisit = Callable[[memoryview, int, int], int]

# 16 blocks of 4 MiB (64 MiB): at the senders' top speed each wakeup decodes some 13,000 probes in one engine call and
# one write, 4x fewer than with 1 MiB blocks, and the CPU a wakeup costs beyond the engine's own work (Python, system
# calls, caches cold after the wait) falls with it (benchmarks.md); at low rates, where the timeout hands blocks over
# part full, the ring holds 16 x the timeout (1.6 s) of a stalled reader (64 x 1 MiB held 6.4 s)
DEFAULT_BLOCK_SIZE = 1 << 22
DEFAULT_BLOCK_COUNT = 16
DEFAULT_BLOCK_TIMEOUT_MS = 100  # a block handed over at most 0.1 s after its first frame: fewer wakeups (benchmarks.md)

# Ring geometry limits, checked before asking the kernel (ring_geometry_problem)
MAX_BLOCK_SIZE = 1 << 30  # the kernel refuses 2 GiB blocks (EINVAL, Linux 6.18)
MAX_BLOCK_COUNT = 1 << 18  # its table of blocks is one allocation: 524,287 blocks fail with ENOMEM (Linux 6.18)
MEMORY_SHARE = 0.5  # all the rings together may take at most this share of MemTotal (and no more than MemAvailable)
FRAME_OVERHEAD = 256  # block header (48 bytes), frame header (tpacket3_hdr, 68) and VLAN tags, with room to spare
U32 = (1 << 32) - 1


def ring_geometry_problem(
    block_size: int,
    block_count: int,
    *,
    rings: int = 1,
    memory: tuple[int, int] | None = None,
    mtu: int | None = None,
) -> str | None:
    """Why `rings` rings of `block_count` x `block_size` bytes cannot work, in one line; None if they can.

    The kernel's own limits (block size a power of two pages, its largest block, its largest table of
    blocks, 32-bit counts), the largest frame (`mtu` + headers) in one block, and the machine's
    `memory`, (MemTotal, MemAvailable) in bytes: all the rings together may take at most MEMORY_SHARE
    of the total, and no more than is available now (the kernel would have to kill something).
    """
    if block_size < mmap.PAGESIZE or block_size & (block_size - 1) or block_size > MAX_BLOCK_SIZE:
        return (
            f"--ring-block-size {block_size}: must be a power of two from {mmap.PAGESIZE} "
            f"(the page size) to {MAX_BLOCK_SIZE} (the kernel's largest block)"
        )
    if not 1 <= block_count <= MAX_BLOCK_COUNT:
        return f"--ring-blocks {block_count}: must be from 1 to {MAX_BLOCK_COUNT:,} (the kernel's largest ring table)"
    if block_size // FRAME_SIZE * block_count > U32:
        return f"--ring-blocks {block_count} x --ring-block-size {block_size}: more frames than the kernel counts"
    if mtu is not None and block_size < mtu + FRAME_OVERHEAD:
        return f"--ring-block-size {block_size}: a block must hold the largest frame (MTU {mtu} + {FRAME_OVERHEAD})"
    if memory is None:
        return None
    total, available = memory
    size = f"--ring-blocks {block_count} x --ring-block-size {block_size} = {_gib(block_size * block_count)}"
    each = f" each, x {rings} workers" if rings > 1 else ""
    if block_size * block_count * rings > total * MEMORY_SHARE:
        return f"{size} of capture ring{each}: more than {MEMORY_SHARE:.0%} of the memory ({_gib(total)} MemTotal)"
    if block_size * block_count * rings > available:
        return f"{size} of capture ring{each}: more than the memory available now ({_gib(available)} MemAvailable)"
    return None


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB" if size >= 1 << 30 else f"{size / (1 << 20):.1f} MiB"


def memory(meminfo: str = "/proc/meminfo") -> tuple[int, int] | None:
    """(MemTotal, MemAvailable) in bytes, None if the kernel does not say."""
    found: dict[str, int] = {}
    try:
        with open(meminfo) as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("MemTotal", "MemAvailable"):
                    found[name] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    if len(found) < 2:
        return None
    return found["MemTotal"], found["MemAvailable"]


def interface_mtu(iface: str) -> int | None:
    try:
        with open(f"/sys/class/net/{iface}/mtu") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


class RingReceiver(BoundReceiver):
    """Frames from a TPACKET_V3 ring: `fileno()` polls readable when a block is ready, `drain()` reads.

    The ring is `block_count` x `block_size` bytes of kernel memory, set up
    before the socket is bound (and joins its fanout group): setting it up
    later would discard what the socket queued meanwhile, after counting it.
    Frames arriving while every block waits for user space are dropped and
    counted (kernel_stats). A drain stopped by `limit` mid-block keeps the
    block and resumes there, so the socket stays readable until it is handed back.
    `program` None captures every frame.
    """

    def __init__(
        self,
        iface: str,
        *,
        program: Program | None = DEFAULT_PROGRAM,
        fanout_group: int | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        block_count: int = DEFAULT_BLOCK_COUNT,
        block_timeout_ms: int = DEFAULT_BLOCK_TIMEOUT_MS,
    ) -> None:
        self.iface = iface
        self._block_size, self._block_count, self._block_timeout_ms = block_size, block_count, block_timeout_ms
        self._check_geometry()
        self._ring: mmap.mmap | None = None
        try:
            self.sock = open_packet_socket(iface, fanout_group=fanout_group, program=program, before_bind=self._map)
        except BaseException:
            if self._ring is not None:
                self._ring.close()
            raise
        self.ifindex = socket.if_nametoindex(iface)
        self._state = mmap.mmap(-1, READ_STATE.size)  # anonymous, shared: see READ_STATE
        self._view = memoryview(self._ring)  # type: ignore[arg-type]  # blocks handed to drain_blocks' visit
        self._outside = 0  # frames outside their block read by drain since take_outside

    @property
    def taken(self) -> int:
        """Frames taken from the ring so far, by this process and any other that read it."""
        return READ_STATE.unpack_from(self._state)[3]

    def _check_geometry(self) -> None:
        size, count = self._block_size, self._block_count
        if size <= 0 or size % mmap.PAGESIZE or size % FRAME_SIZE or count <= 0:
            unit = max(mmap.PAGESIZE, FRAME_SIZE)
            raise CaptureSetupError(f"ring blocks must be a positive multiple of {unit} bytes, and at least one")
        if size > U32 or count > U32 or size // FRAME_SIZE * count > U32:  # tpacket_req3's fields are 32-bit
            raise CaptureSetupError(f"a {count} x {size} bytes capture ring is beyond the kernel's 32-bit counts")

    def _map(self, sock: socket.socket) -> None:
        """TPACKET_V3, the ring, its mapping (the kernel zeroes the ring: some 200 ms for 64 MiB)."""
        size, count = self._block_size, self._block_count
        request = TPACKET_REQ3.pack(size, count, FRAME_SIZE, size // FRAME_SIZE * count, self._block_timeout_ms, 0, 0)
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
            self._ring = mmap.mmap(sock.fileno(), size * count, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            raise CaptureSetupError(
                f"cannot set up a {count} x {size} bytes capture ring on {self.iface}: {e.strerror}"
            ) from None

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self, out: Frames, limit: int) -> int:
        """Append up to `limit` frames from the ready blocks to `out`, as (capture_ns, bytes); how many were
        taken from the ring (frames outside their block are counted by take_outside, not appended)."""
        append, frame_header = out.append, FRAME_HEADER.unpack_from
        outside = 0

        def visit(block: memoryview, at: int, count: int) -> int:
            nonlocal outside
            end = len(block)
            for _ in range(count):
                if at + FRAME_HEADER.size > end:
                    outside += 1
                    continue
                next_offset, sec, nsec, snaplen, mac = frame_header(block, at)
                start = at + mac
                if start + snaplen > end:
                    outside += 1
                else:
                    append((sec * 1_000_000_000 + nsec, block[start : start + snaplen].tobytes()))
                at += next_offset
            return at

        count = self.drain_blocks(visit, limit)
        self._outside += outside
        return count

    def take_outside(self) -> int:
        """Frames that drain() took from the ring but could not read (outside their block) since the last call:
        the caller counts them as malformed (OUTSIDE_BLOCK)."""
        outside, self._outside = self._outside, 0
        return outside

    def drain_blocks(self, visit: BlockVisit, limit: int, visits: int | None = None) -> int:
        """Hand up to `limit` frames of the ready blocks to `visit`, a block (or the rest of it) at a time, in
        place: no copy, no object per frame; at most `visits` calls (None: as many as it takes). A block goes
        back to the kernel once visit has returned from its last frames; how many frames were visited."""
        view, size, state = self._view, self._block_size, self._state
        block, left, at, taken = READ_STATE.unpack_from(state)
        count = visited = 0
        while count < limit and visited != visits:
            if not left:
                block, left, at = self._take_block(self._ring, block)
                if not left:
                    break
            take = min(left, limit - count)
            base = block * size
            at = base + visit(view[base : base + size], at - base, take)
            visited += 1
            left -= take
            count += take
            taken += take
            READ_STATE.pack_into(state, 0, block, left, at, taken)  # once per block: a process killed
            if not left:  # before this leaves the frames to the next reader, after it they are read
                block = self._release_block(self._ring, block)
        if not count:  # woken with nothing ready: maybe a socket error that would keep poll readable
            clear_socket_error(self.sock, self.iface, self.ifindex)
        return count

    def _take_block(self, ring: mmap.mmap, block: int) -> tuple[int, int, int]:
        """(block, frames, first frame's offset) of the next block if the kernel has retired it to user
        space, else (block, 0, 0); empty ones go straight back."""
        for _ in range(self._block_count):
            base = block * self._block_size
            status, frames, first = BLOCK_HEADER.unpack_from(ring, base + BLOCK_STATUS_OFFSET)
            if not status & TP_STATUS_USER:
                break
            if frames:
                return block, frames, base + first
            block = self._release_block(ring, block)
        return block, 0, 0

    def _release_block(self, ring: mmap.mmap, block: int) -> int:
        """Hand `block` back to the kernel; the next block to read."""
        BLOCK_STATUS.pack_into(ring, block * self._block_size + BLOCK_STATUS_OFFSET, TP_STATUS_KERNEL)
        following = (block + 1) % self._block_count
        taken = READ_STATE.unpack_from(self._state)[3]
        READ_STATE.pack_into(self._state, 0, following, 0, 0, taken)  # at 0: not started (see resume)
        return following

    def resume(self) -> None:
        """Take over the ring from a reader that may have died anywhere: go on from the block in hand if it
        is still held, else from the oldest block handed over (the lowest sequence number), else from
        the block the kernel is filling (the highest)."""
        ring, state = self._ring, self._state
        assert ring is not None
        block, left, at, taken = READ_STATE.unpack_from(state)
        if self._status(block) & TP_STATUS_USER:
            if left or not at:  # a block part read, or the next one, not started
                return
            self._release_block(ring, block)  # read to its end, then the reader died before handing it back
            block = (block + 1) % self._block_count
            if self._status(block) & TP_STATUS_USER:
                return
        blocks = range(self._block_count)  # where it stands is not where the kernel goes on: ask the blocks
        held = [b for b in blocks if self._status(b) & TP_STATUS_USER]
        block = min(held, key=self._seq) if held else max(blocks, key=self._seq)
        READ_STATE.pack_into(state, 0, block, 0, 0, taken)

    def _status(self, block: int) -> int:
        assert self._ring is not None
        return BLOCK_STATUS.unpack_from(self._ring, block * self._block_size + BLOCK_STATUS_OFFSET)[0]

    def _seq(self, block: int) -> int:
        assert self._ring is not None
        return BLOCK_SEQ.unpack_from(self._ring, block * self._block_size + BLOCK_SEQ_OFFSET)[0]

    def stop_receiving(self) -> float:
        """No more frames; the block being filled is handed over within the block timeout: drain until then."""
        super().stop_receiving()
        return self._block_timeout_ms / 1000 * 2 + 0.1

    def unread(self) -> int:
        """Frames not read yet: the rest of the block in hand, the blocks handed over since, and the
        frames so far of the block the kernel is filling (the first one it still owns, in fill order)."""
        ring, count = self._ring, self._block_count
        if ring is None:
            return 0
        block, left, _, _ = READ_STATE.unpack_from(self._state)
        total = left
        if left:  # the block in hand is counted by what is left of it
            block, count = (block + 1) % count, count - 1
        for _ in range(count):
            status, frames, _ = BLOCK_HEADER.unpack_from(ring, block * self._block_size + BLOCK_STATUS_OFFSET)
            total += frames
            if not status & TP_STATUS_USER:
                break
            block = (block + 1) % self._block_count
        return total

    def ring_use(self) -> float:
        """The share of blocks now waiting for user space: near 1, the kernel is about to drop."""
        ring, status = self._ring, BLOCK_STATUS.unpack_from
        if ring is None:
            return 0.0
        held = sum(
            status(ring, block * self._block_size + BLOCK_STATUS_OFFSET)[0] & TP_STATUS_USER
            for block in range(self._block_count)
        )
        return held / self._block_count

    def close(self) -> None:
        self._view.release()
        if self._ring is not None:
            self._ring.close()
        self._state.close()
        self.sock.close()
