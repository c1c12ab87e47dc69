"""The pure PT decoder: frame bytes in, probe record out.

No sockets, asyncio, scapy or rich here. For any input `Decoder.decode`
returns a Record, returns None (not a PT probe), or raises DecodeError
(a frame that claims to be PT but is inconsistent); anything else is a bug.

Speed comes from layouts: probes from one source along one path repeat the
same headers and differ only in a few value fields (times, loads, MCDs,
sequence). The first frame of a kind is walked field by field; the walk
notes every byte that decided the structure and every value field, and
compiles two structs: a guard over the deciding bytes and an extractor for
the values. Later frames of the same length whose guard bytes are equal
skip the walk: one unpack checks them, one unpack reads the values. The
walk reads nothing else, so both paths give the same record.
"""

from __future__ import annotations

import functools
import re
import socket
import struct
from collections.abc import Callable, Mapping
from ipaddress import IPv6Address, IPv6Network

from .record import SCHEMA_VERSION, Hop, Node, Record
from .tts import MAX_SHIFT, midpoint_times
from .wire import (
    ETH_P_IPV6,
    ETH_P_VLAN,
    EXT_HEADERS_8,
    IPV6_HEADER,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPES_RAW,
    MCD_SIZE,
    NH_AH,
    NH_DEST_OPTS,
    NH_FRAGMENT,
    NH_HOP_BY_HOP,
    NH_IPV6,
    NH_ROUTING,
    NS_PER_S,
    OPT_PAD1,
    OPT_PT,
    PT_TLV_LEN,
    ROUTING_TYPE_SRH,
    SRH_FIXED,
    SRH_NO_SEGMENTS,
    TLV_PAD1,
    TLV_PT,
)

MAX_LAYOUTS = 65536  # cached layouts before the cache starts afresh
GUARDS_PER_LENGTH = 4  # deciding-byte masks kept (and tried) per link type and frame length
AGE_EVERY = 4096  # walks between two halvings of the guards' hit counts
MAX_KINDS = 4096  # kinds of frame (read sequences) and value readers remembered: a few KB each, so fewer
MANY_OPTIONS = 8  # options (TLVs) of a header walked one by one; past them, runs of others are skipped in one match
MAX_HOPS_CACHED = 1 << 17  # cached MCDs (about 15 MB at most)


class DecodeError(Exception):
    """A frame claims to be a PT probe but is inconsistent.

    `layer` and `reason` are short fixed strings (counters group by them);
    `offset` is the byte offset in the frame where the problem starts.
    """

    def __init__(self, layer: str, offset: int, reason: str) -> None:
        super().__init__(f"{layer} at byte {offset}: {reason}")
        self.layer = layer
        self.offset = offset
        self.reason = reason

    @property
    def key(self) -> str:
        """`layer: reason`, the counter this error is counted under."""
        return f"{self.layer}: {self.reason}"


class _NotPT(Exception):
    """Internal: the frame is no PT probe."""


class _Walk:
    """One field-by-field read of a frame, noting which bytes decided what."""

    __slots__ = ("claimed", "deciding", "frame", "size", "values")

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.size = len(frame)
        self.deciding: list[tuple[int, int]] = []  # (start, end) of every read that decided the structure
        self.values: list[tuple[int, str, int]] = []  # (offset, struct code, size), in frame order
        self.claimed = False  # PT-ness established: inconsistencies are now malformed

    def fail(self, layer: str, offset: int, reason: str) -> None:
        if self.claimed:
            raise DecodeError(layer, offset, reason)
        raise _NotPT

    def need(self, offset: int, size: int, limit: int, layer: str, reason: str) -> None:
        if offset + size > limit or offset + size > self.size:
            self.fail(layer, offset, reason if limit <= self.size else "truncated frame")

    def zeros(self, offset: int, stop: int) -> int:
        """The end of the run of zero bytes (Pad1) at `offset`, at most `stop`: one C call, not a loop."""
        run = self.frame[offset:stop]
        end = stop - len(run.lstrip(b"\0"))
        self.deciding.append((offset, end))
        return end

    def skip(self, run: re.Pattern[bytes], offset: int, stop: int) -> int:
        """The end of the `run` of options at `offset` (none of which can fail a check: they fit before `stop`)."""
        end = run.match(self.frame, offset, stop).end()  # type: ignore[union-attr]  # matches empty at least
        if end > offset:
            self.deciding.append((offset, end))
        return end

    def read(self, offset: int, size: int) -> bytes:
        self.deciding.append((offset, offset + size))
        return self.frame[offset : offset + size]

    def u8(self, offset: int) -> int:
        self.deciding.append((offset, offset + 1))
        return self.frame[offset]

    def u16(self, offset: int) -> int:
        return int.from_bytes(self.read(offset, 2), "big")


# The runs below are compiled on first use (a walk past MANY_OPTIONS), not on import: each is a few ms of
# re.compile, and most runs of ptc (the native engine, a --help) never need them.
@functools.cache
def _options_run(pt_type: int) -> re.Pattern[bytes]:
    """Pad1 bytes and whole options of any type but `pt_type` (each its type, length and data), as many as fit."""
    lengths = b"|".join(b"\\x%02x.{%d}" % (n, n) for n in range(256))
    # possessive (*+): one pass, no backtracking
    return re.compile(b"(?:\\x00|[^\\x00\\x%02x](?:%s))*+" % (pt_type, lengths), re.DOTALL)


@functools.cache
def _headers_run() -> re.Pattern[bytes]:
    """Hop-by-Hop, Destination Options and Routing headers that are no SRH (the lookahead), each of (len + 1) x 8
    bytes, chained by their next header: group 1 is the last one, whose next header is where the walk goes on."""
    units = b"|".join(b"\\x%02x.{%d}" % (n, n * 8 + 6) for n in range(256))
    return re.compile(b"(?:((?:[\\x00\\x3c](?:%s)|\\x2b(?:%s)(?=..[^\\x04]))))*+" % (units, units), re.DOTALL)


def _skip_headers(w: _Walk, nh: int, pos: int, end: int, walked: int) -> tuple[int, int]:
    """(next header, position) past a run of plain extension headers, once MANY_OPTIONS were walked one by one.

    The run is marked deciding as a whole (a stricter guard); none of its
    headers could fail a check or be an SRH, so the walk goes on as if it
    had stepped over each.
    """
    if walked <= MANY_OPTIONS or nh not in (NH_HOP_BY_HOP, NH_DEST_OPTS):
        return nh, pos
    found = _headers_run().match(w.frame, pos, min(end, w.size))
    last = found.start(1) if found else -1
    if last < 0:
        return nh, pos
    w.deciding.append((pos, found.end()))  # type: ignore[union-attr]
    return w.frame[last], found.end()  # type: ignore[union-attr]


class _Shape:
    """Facts a walk found: where the values are and the constant strings."""

    def __init__(self) -> None:
        self.sink_addr: str | None = None
        self.src_addr = ""
        self.dst = ""
        self.segments: tuple[str, ...] = ()
        self.has_src_tlv = False
        self.stack_len = 0


# ---------------------------------------------------------------- the walk


def _ipv6_offset(w: _Walk, linktype: int) -> int:
    """Offset of the IPv6 header behind the link layer, or not PT."""
    if linktype == LINKTYPE_ETHERNET:
        off, ethertype_at = 14, 12
        w.need(0, off, w.size, "ethernet", "truncated frame")
        ethertype = w.u16(ethertype_at)
        while ethertype in ETH_P_VLAN:
            w.need(off, 4, w.size, "vlan", "truncated frame")
            ethertype = w.u16(off + 2)
            off += 4
    elif linktype == LINKTYPE_LINUX_SLL:
        off = 16
        w.need(0, off, w.size, "sll", "truncated frame")
        ethertype = w.u16(14)
    elif linktype == LINKTYPE_LINUX_SLL2:
        off = 20
        w.need(0, off, w.size, "sll2", "truncated frame")
        ethertype = w.u16(0)
    elif linktype in LINKTYPES_RAW:
        off, ethertype = 0, ETH_P_IPV6
    else:
        raise _NotPT
    if ethertype != ETH_P_IPV6:
        raise _NotPT
    return off


def _ipv6_header(w: _Walk, off: int, limit: int, layer: str) -> tuple[int, int]:
    """(next header, claimed end) of the IPv6 header at `off`.

    The end is checked against `limit` by the caller once the packet claims
    to be PT (`_check_end`): a truncated non-PT frame is just not PT.
    """
    w.need(off, IPV6_HEADER, limit, layer, "header runs past the enclosing packet")
    if w.u8(off) >> 4 != 6:
        w.fail(layer, off, "not IPv6")
    head = w.read(off + 4, 3)  # payload length, next header
    return head[2], off + IPV6_HEADER + (head[0] << 8 | head[1])


def _check_end(w: _Walk, off: int, end: int, limit: int, layer: str, reason: str) -> None:
    """A packet claiming more bytes than what encloses it (the frame, or the outer packet)."""
    if end > limit:
        w.fail(layer, off, reason)


def _is_srh(w: _Walk, nh: int, pos: int, end: int, layer: str) -> bool:
    if nh != NH_ROUTING:
        return False
    w.need(pos, 3, end, layer, "header runs past the packet")
    return w.u8(pos + 2) == ROUTING_TYPE_SRH


def _ext_size(w: _Walk, nh: int, pos: int, end: int, layer: str) -> int:
    w.need(pos, 2, end, layer, "header runs past the packet")
    if nh == NH_FRAGMENT:
        size = 8
    elif nh == NH_AH:
        size = (w.u8(pos + 1) + 2) * 4
    else:
        size = (w.u8(pos + 1) + 1) * 8
    w.need(pos, size, end, layer, "header runs past the packet")
    return size


def _hbh_pt_option(w: _Walk, pos: int, end: int) -> tuple[int, int] | None:
    """(offset, length) of the MCD stack in the HbH header at `pos`, if it has PT."""
    w.need(pos, 2, end, "hbh", "header runs past the packet")
    hbh_end = pos + (w.u8(pos + 1) + 1) * 8
    stack = None
    p = pos + 2
    walked = 0
    while p < hbh_end:
        walked += 1
        if walked > MANY_OPTIONS:  # a run of options that fit is marked deciding as a whole: a stricter guard
            p = w.skip(_options_run(OPT_PT), p, min(hbh_end, end, w.size))
            if p >= hbh_end:
                break
        w.need(pos, p + 1 - pos, end, "hbh", "header runs past the packet")
        if w.frame[p] == OPT_PAD1:  # a run of Pad1 to the next option, or to where the header or packet ends
            p = w.zeros(p, min(hbh_end, end, w.size))
            continue
        w.need(pos, p + 2 - pos, end, "hbh", "header runs past the packet")
        opt_type, opt_len = w.read(p, 2)
        if opt_type == OPT_PT and stack is None:
            w.claimed = True
            if opt_len % MCD_SIZE:
                w.fail("hbh-pt", p, "opt data len not a multiple of 3")
            stack = (p + 2, opt_len)
        if p + 2 + opt_len > hbh_end:
            w.fail("hbh-pt" if stack and stack[0] == p + 2 else "hbh", p, "option runs past the header")
        p += 2 + opt_len
    w.need(pos, hbh_end - pos, end, "hbh", "header runs past the packet")
    return stack


def _srh(w: _Walk, pos: int, end: int, layer: str) -> tuple[list[int], int | None, int]:
    """Walk the SRH at `pos`: (segment offsets in list order, PT TLV offset, size)."""
    size = _ext_size(w, NH_ROUTING, pos, end, layer)
    w.need(pos, SRH_FIXED, pos + size, layer, "header runs past the packet")
    last_entry = w.u8(pos + 4)
    count = 0 if last_entry == SRH_NO_SEGMENTS else last_entry + 1
    tlv_at = pos + SRH_FIXED + 16 * count
    if tlv_at > pos + size:
        w.fail(layer, pos, "segment list runs past the header")
    segments = list(range(pos + SRH_FIXED, tlv_at, 16))
    pt_tlv = None
    p = tlv_at
    walked = 0
    while p < pos + size:
        walked += 1
        if walked > MANY_OPTIONS:
            p = w.skip(_options_run(TLV_PT), p, pos + size)
            if p >= pos + size:
                break
        tlv_type = w.frame[p]
        if tlv_type == TLV_PAD1:
            p = w.zeros(p, pos + size)
            continue
        if tlv_type == TLV_PT:  # a PT TLV claims the frame (the sink's, in an outer SRH): broken now is malformed
            w.claimed = True
        w.need(p, 2, pos + size, layer, "TLV runs past the header")
        tlv_len = w.read(p, 2)[1]  # type and length both decide
        w.need(p, 2 + tlv_len, pos + size, layer, "TLV runs past the header")
        if tlv_type == TLV_PT and pt_tlv is None:
            if tlv_len != PT_TLV_LEN:
                w.fail("pt-tlv", p, "length is not 14")
            pt_tlv = p
        p += 2 + tlv_len
    return segments, pt_tlv, size


def _addr(w: _Walk, offset: int) -> str:
    return _address_text(w.read(offset, 16))


def _addrs(w: _Walk, offset: int, count: int) -> list[str]:
    """`count` addresses one after the other from `offset`: one read."""
    packed = w.read(offset, 16 * count)
    return [_address_text(packed[i : i + 16]) for i in range(0, 16 * count, 16)]


def _pt_tlv_values(w: _Walk, tlv: int, with_session: bool) -> None:
    w.values += (
        (tlv + 2, "H", 2),  # IF_ID << 4 | IF_LD
        (tlv + 4, "I", 4),  # T64 seconds
        (tlv + 8, "I", 4),  # T64 nanoseconds
    )
    if with_session:
        w.values += ((tlv + 12, "H", 2), (tlv + 14, "H", 2))


def _probe(w: _Walk, shape: _Shape, off: int, nh: int, end: int) -> bool:
    """Walk the probe whose IPv6 header is at `off`: HbH-PT, then its SRH.

    False if it carries no HbH-PT option (then it is no probe).
    """
    pos = off + IPV6_HEADER
    if nh != NH_HOP_BY_HOP:
        return False
    stack = _hbh_pt_option(w, pos, end)
    if stack is None:
        return False
    shape.src_addr, shape.dst = _addrs(w, off + 8, 2)
    w.values += (
        (off, "I", 4),  # version, traffic class, flow label
        (off + 7, "B", 1),  # hop limit
        (stack[0], f"{stack[1]}s", stack[1]),
    )
    shape.stack_len = stack[1]
    nh = w.u8(pos)
    pos += _ext_size(w, NH_HOP_BY_HOP, pos, end, "hbh")
    walked = 0
    while nh in EXT_HEADERS_8 or nh in (NH_FRAGMENT, NH_AH):
        walked += 1
        nh, pos = _skip_headers(w, nh, pos, end, walked)
        if _is_srh(w, nh, pos, end, "srh"):
            segments, tlv, _ = _srh(w, pos, end, "srh")
            if tlv is None:
                w.fail("srh", pos, "no PT TLV")
                return False
            shape.segments = tuple(reversed(_addrs(w, segments[0], len(segments)))) if segments else ()
            shape.has_src_tlv = True
            _pt_tlv_values(w, tlv, with_session=True)
            break
        size = _ext_size(w, nh, pos, end, "ipv6-ext")  # checks the header is there before reading from it
        nh = w.u8(pos)
        pos += size
    return True


def _walk(w: _Walk, linktype: int) -> _Shape:
    """Walk a frame: a bare probe, or an encapsulation (outer IPv6 + SRH with the sink's TLV) around one."""
    off = _ipv6_offset(w, linktype)
    shape = _Shape()
    nh, end = _ipv6_header(w, off, w.size, "ipv6")
    if _probe(w, shape, off, nh, end):
        _check_end(w, off, end, w.size, "ipv6", "truncated frame")
        return shape
    sink_tlv = None
    pos = off + IPV6_HEADER
    walked = 0
    while nh in EXT_HEADERS_8 or nh in (NH_FRAGMENT, NH_AH):
        walked += 1
        nh, pos = _skip_headers(w, nh, pos, end, walked)
        if sink_tlv is None and _is_srh(w, nh, pos, end, "outer-srh"):
            segments, sink_tlv, size = _srh(w, pos, end, "outer-srh")
            if sink_tlv is None and len(segments) > 1:
                sink_tlv = _tlv_over_last_sid(w, segments[-1])
            w.claimed = sink_tlv is not None
        else:
            size = _ext_size(w, nh, pos, end, "outer-ext")
        nh = w.u8(pos)
        pos += size
    if nh == NH_IPV6:
        if sink_tlv is not None:
            _pt_tlv_values(w, sink_tlv, with_session=False)
            shape.sink_addr = _addr(w, off + 8)
        inner_nh, inner_end = _ipv6_header(w, pos, end, "inner-ipv6")
        _check_end(w, pos, inner_end, end, "inner-ipv6", "payload length runs past the enclosing packet")
        if _probe(w, shape, pos, inner_nh, inner_end):
            _check_end(w, off, end, w.size, "ipv6", "truncated frame")
            return shape
    w.fail("encapsulation", pos, "PT TLV without an inner probe")
    raise _NotPT


def _tlv_over_last_sid(w: _Walk, sid: int) -> int | None:
    """An early VPP build wrote the sink's PT TLV over the last SID: survive it."""
    if w.u8(sid) == TLV_PT and w.u8(sid + 1) == PT_TLV_LEN:
        return sid
    return None


_address_cache: dict[bytes, str] = {}
_IPV4_EMBEDDED = bytes(10)  # ::a.b.c.d and ::ffff:a.b.c.d: inet_ntop writes them dotted, ipaddress does not


def _address_text(packed: bytes) -> str:
    """The address as `str(IPv6Address(packed))` writes it (RFC 5952), by inet_ntop where both agree."""
    text = _address_cache.get(packed)
    if text is None:
        if len(_address_cache) >= MAX_LAYOUTS:
            _address_cache.clear()
        if packed.startswith(_IPV4_EMBEDDED):
            text = str(IPv6Address(packed))
        else:
            text = socket.inet_ntop(socket.AF_INET6, packed)
        _address_cache[packed] = text
    return text


# ---------------------------------------------------------------- layouts


def _struct_format(spans: list[tuple[int, str, int]]) -> str:
    """A struct format reading (offset, code, size) spans in order, skipping the gaps."""
    parts, at = [">"], 0
    for offset, code, size in spans:
        if offset > at:
            parts.append(f"{offset - at}x")
        parts.append(code)
        at = offset + size
    return "".join(parts)


_structs: dict[str, struct.Struct] = {}


def _compiled(fmt: str) -> struct.Struct:
    """One Struct per format: layouts of the same shape share it (bounded like the layouts)."""
    st = _structs.get(fmt)
    if st is None:
        if len(_structs) >= MAX_LAYOUTS:
            _structs.clear()
        st = _structs[fmt] = struct.Struct(fmt)
    return st


def _guard_format(deciding: list[tuple[int, int]]) -> str:
    """A struct format reading every run of deciding bytes (the reads, sorted and merged), skipping the gaps."""
    deciding.sort()
    parts, at = [">"], 0
    start, end = deciding[0]
    for begin, stop in deciding:
        if begin > end:
            parts.append(f"{start - at}x{end - start}s")
            at, start = end, begin
        if stop > end:
            end = stop
    parts.append(f"{start - at}x{end - start}s")
    return "".join(parts)


_NO_SRC_TLV = (0, 0, 0, 0, 0)
_readers: dict[tuple, Callable[[bytes], tuple]] = {}


def _values_reader(values: tuple[tuple[int, str, int], ...], has_src_tlv: bool) -> Callable[[bytes], tuple]:
    """One unpack of every value field (offset, code, size) of a layout; shared by layouts that agree."""
    reader = _readers.get((values, has_src_tlv))
    if reader is None:
        if len(_readers) >= MAX_KINDS:
            _readers.clear()
        reader = _compiled(_struct_format(list(values))).unpack_from
        if not has_src_tlv:

            def reader(frame: bytes, _unpack: Callable = reader) -> tuple:
                return _unpack(frame) + _NO_SRC_TLV

        _readers[values, has_src_tlv] = reader
    return reader


class Layout:
    """One compiled kind of frame: how to read its values and make a record."""

    __slots__ = ("build", "values")

    def __init__(self, values: Callable[[bytes], tuple], build: Callable[..., Record]) -> None:
        self.values = values
        self.build = build


class _Guard:
    """The deciding bytes of one kind of frame, and the layouts seen for each of their values."""

    __slots__ = ("hits", "layouts", "unpack")

    def __init__(self, unpack: Callable[[bytes], tuple]) -> None:
        self.unpack = unpack
        self.layouts: dict[tuple, Layout] = {}
        self.hits = 0  # frames it decoded (halved every AGE_EVERY walks): the busiest guards are tried first


def _checked_shift(shift: int | None) -> int | None:
    if shift is not None and not 0 <= shift <= MAX_SHIFT:
        raise ValueError(f"TTS shift must be 0..{MAX_SHIFT}, not {shift}")
    return shift


class Decoder:
    """Decodes captured frames into probe records.

    tts_shift: the TTS template shift (0..24) for midpoint time
    reconstruction; None leaves every hop's time_ns None.
    shift_by_source: the shift of the midpoints on the paths of some source
    nodes, by prefix of the source address (IPv6Network or its text); the
    longest prefix holding the source wins, a source in none gets tts_shift.
    The template is a per-router setting, not in the packet.
    """

    def __init__(
        self, tts_shift: int | None = None, shift_by_source: Mapping[IPv6Network | str, int] | None = None
    ) -> None:
        self.tts_shift = _checked_shift(tts_shift)
        prefixes = [(IPv6Network(prefix), _checked_shift(shift)) for prefix, shift in (shift_by_source or {}).items()]
        # longest first, so the first prefix holding a source is the most specific one
        self.prefix_shifts = tuple(sorted(prefixes, key=lambda entry: -entry[0].prefixlen))
        # at most GUARDS_PER_LENGTH guards per (link type, frame length), busiest first: a frame costs
        # at most that many guard checks, then at most one walk, however many layouts share its length
        self._guards: dict[tuple[int, int], list[_Guard]] = {}
        self._layout_count = 0
        self._hop_cache = _HopCache()
        self.walks = 0  # frames walked field by field (every frame no cached layout held)
        self._builders: dict[tuple, Callable[..., Record]] = {}
        self._hop_readers: dict[tuple[int, int | None], Callable[..., tuple[Hop, ...]]] = {}
        # the reads of each kind of frame walked: its guard, compiled from the second walk on
        self._kinds: dict[tuple, Callable[[bytes], tuple] | None] = {}

    def decode(self, frame: bytes, capture_ns: int = 0, linktype: int = LINKTYPE_ETHERNET) -> Record | None:
        """The probe record of one frame; None if it is no PT probe; DecodeError if malformed."""
        guards = self._guards.get((linktype, len(frame)))
        if guards is not None:
            for guard in guards:
                layout = guard.layouts.get(guard.unpack(frame))
                if layout is not None:
                    guard.hits += 1
                    if guard is not guards[0]:
                        _promote(guards, guard)
                    return layout.build(layout.values(frame), capture_ns)
        layout = self._learn(frame, linktype)
        if layout is None:
            return None
        return layout.build(layout.values(frame), capture_ns)

    def _learn(self, frame: bytes, linktype: int) -> Layout | None:
        self.walks += 1
        if not self.walks % AGE_EVERY:
            self._age()
        w = _Walk(frame)
        try:
            shape = _walk(w, linktype)
        except _NotPT:
            return None
        except (IndexError, struct.error) as exc:  # pragma: no cover - a walk bug, never input's fault
            raise AssertionError(f"decoder walk read out of bounds: {exc}") from exc
        layout = Layout(_values_reader(tuple(w.values), shape.has_src_tlv), self._builder(shape))
        reads = (linktype, len(frame), tuple(w.deciding))  # the same reads: the same deciding bytes
        if reads in self._kinds:  # a kind of frame seen before: worth a guard
            unpack = self._kinds[reads]
            if unpack is None:
                unpack = self._kinds[reads] = _compiled(_guard_format(w.deciding)).unpack_from
            self._remember(linktype, frame, unpack, layout)
        else:  # a one-off (a crafted frame, a mutation) compiles no guard and takes no guard's place
            if len(self._kinds) >= MAX_KINDS:
                self._kinds.clear()
            self._kinds[reads] = None
        return layout

    def _remember(self, linktype: int, frame: bytes, unpack: Callable[[bytes], tuple], layout: Layout) -> None:
        if self._layout_count >= MAX_LAYOUTS:
            self._guards.clear()
            self._layout_count = 0
        guards = self._guards.setdefault((linktype, len(frame)), [])
        for guard in guards:
            if guard.unpack == unpack:
                break
        else:
            guard = _Guard(unpack)
            if len(guards) >= GUARDS_PER_LENGTH:  # the least busy one makes room (its layouts go with it)
                self._layout_count -= len(guards.pop().layouts)
            guards.append(guard)
        guard.layouts[unpack(frame)] = layout
        self._layout_count += 1

    def _age(self) -> None:
        """Halve every guard's hits, so that a guard busy long ago yields its place to today's."""
        for guards in self._guards.values():
            for guard in guards:
                guard.hits >>= 1

    def shift_for(self, src_addr: str) -> int | None:
        """The TTS shift of the midpoints on paths from the source `src_addr`."""
        if self.prefix_shifts:
            address = IPv6Address(src_addr)
            for prefix, shift in self.prefix_shifts:
                if address in prefix:
                    return shift
        return self.tts_shift

    def _builder(self, shape: _Shape) -> Callable[..., Record]:
        """The record maker of a layout: one per set of constants (layouts of one path share it)."""
        key = (shape.src_addr, shape.sink_addr, shape.dst, shape.segments, shape.has_src_tlv, shape.stack_len)
        build = self._builders.get(key)
        if build is None:
            if len(self._builders) >= MAX_LAYOUTS:
                self._builders.clear()
            build = self._builders[key] = self._new_builder(shape)
        return build

    def _new_builder(self, shape: _Shape) -> Callable[..., Record]:
        src_addr, sink_addr, dst, segments = shape.src_addr, shape.sink_addr, shape.dst, shape.segments
        src_known = shape.has_src_tlv
        # the source address is a layout constant: its shift is looked up once here, never per frame
        hops_key = (shape.stack_len, self.shift_for(src_addr))
        hops_of = self._hop_readers.get(hops_key)
        if hops_of is None:  # few: one per stack size and shift
            hops_of = self._hop_readers[hops_key] = self._hops_reader(*hops_key)

        if sink_addr is None:

            def build_bare(v: tuple, capture_ns: int) -> Record:
                vtcfl, hop_limit, stack, word, sec, nsec, session_id, sequence = v
                src_ns = sec * NS_PER_S + nsec
                return Record(
                    SCHEMA_VERSION, capture_ns, session_id, sequence,
                    Node(src_addr, word >> 4, word & 0xF, src_ns), None, dst, segments,
                    hops_of(stack, None, None), None,
                    vtcfl >> 20 & 0xFF, vtcfl & 0xFFFFF, hop_limit,
                )  # fmt: skip

            return build_bare

        def build_encap(v: tuple, capture_ns: int) -> Record:
            sink_word, sink_sec, sink_nsec, vtcfl, hop_limit, stack, word, sec, nsec, session_id, sequence = v
            sink_ns = sink_sec * NS_PER_S + sink_nsec
            src_ns = sec * NS_PER_S + nsec if src_known else None
            return Record(
                SCHEMA_VERSION, capture_ns, session_id, sequence,
                Node(src_addr, word >> 4, word & 0xF, src_ns or 0),
                Node(sink_addr, sink_word >> 4, sink_word & 0xF, sink_ns), dst, segments,
                hops_of(stack, src_ns, sink_ns), None if src_ns is None else sink_ns - src_ns,
                vtcfl >> 20 & 0xFF, vtcfl & 0xFFFFF, hop_limit,
            )  # fmt: skip

        return build_encap

    def _hops_reader(
        self, stack_len: int, tts_shift: int | None
    ) -> Callable[[bytes, int | None, int | None], tuple[Hop, ...]]:
        """hops(stack, src_ns, sink_ns): Hops in path order from an MCD stack of `stack_len` bytes.

        The stack is newest first and ends at the first all-zero MCD. Hops
        without a time come from a cache: an MCD is 3 bytes, and the same
        interface, load and TTS come back again and again.
        """
        split = _compiled("3s" * (stack_len // MCD_SIZE)).unpack
        hop_of = self._hop_cache.__getitem__

        def hops(stack: bytes, src_ns: int | None, sink_ns: int | None) -> tuple[Hop, ...]:
            mcds = split(stack)
            try:
                count = mcds.index(_EMPTY_MCD)
            except ValueError:
                count = len(mcds)
            path = tuple(map(hop_of, mcds[count - 1 :: -1])) if count else ()
            if tts_shift is None or src_ns is None or sink_ns is None:
                return path
            times = midpoint_times([hop.tts for hop in path], tts_shift, src_ns, sink_ns)
            return tuple(Hop(hop.if_id, hop.if_load, hop.tts, t) for hop, t in zip(path, times, strict=True))

        return hops


def _promote(guards: list[_Guard], guard: _Guard) -> None:
    """Move `guard` one place up if it has now decoded more frames than the one before it."""
    at = guards.index(guard)
    if guards[at - 1].hits < guard.hits:
        guards[at - 1], guards[at] = guard, guards[at - 1]


_EMPTY_MCD = bytes(MCD_SIZE)


class _HopCache(dict[bytes, Hop]):
    """The Hop (without a time) of each 3-byte MCD seen, bounded."""

    def __missing__(self, mcd: bytes) -> Hop:
        if len(self) >= MAX_HOPS_CACHED:
            self.clear()
        value = int.from_bytes(mcd, "big")
        hop = self[mcd] = Hop(value >> 12, value >> 8 & 0xF, value & 0xFF, None)
        return hop
