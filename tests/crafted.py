"""Crafted PT frames: valid probes of one frame length, each with its own layout.

The layout cache's worst case (issue 10, item 3): encapsulated probes padded
to one frame length, each with a different mix of MCD count, segment count,
Destination Options size and PadN size, so that no two share the bytes that
decide their structure. Every frame decodes to a record.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from pt_collector.codec.encode import PtTlv, encapsulate, ethernet, hop_by_hop, ipv6, pad_options, srh
from pt_collector.codec.generate import DEFAULT_START_NS
from pt_collector.codec.wire import MCD_SIZE, NH_DEST_OPTS, NH_HOP_BY_HOP, NH_NONE, NH_ROUTING

FRAME_SIZE = 600  # every crafted frame is padded to this length
MAX_MCDS = 12  # the stack a PT source sends (opt data len 36)
MAX_SEGMENTS = 10
DEST_OPTS_UNITS = range(0, 17)  # 0: no Destination Options header; else (units) x 8 bytes
PADNS = range(0, 16)  # a PadN option of 2 + n bytes before the PT option (0: none)
CRAFTED_SOURCE, CRAFTED_SINK = "2001:db8:bad::1", "2001:db8:bad:e::1"  # none of `ptc generate`'s


def layouts() -> Iterator[tuple[int, int, int, int]]:
    """(MCDs, segments, Destination Options units, PadN) in a fixed order: 32,640 distinct mixes."""
    return itertools.product(range(1, MAX_MCDS + 1), range(1, MAX_SEGMENTS + 1), DEST_OPTS_UNITS, PADNS)


def dest_opts(next_header: int, units: int) -> bytes:
    """A Destination Options header of `units` x 8 bytes, all PadN."""
    return bytes((next_header, units - 1)) + pad_options(units * 8 - 2)


def crafted_packet(mcds: int, segments: int, dest_units: int, padn: int, n: int = 0, size: int = FRAME_SIZE) -> bytes:
    """An encapsulated probe with this layout, as an Ethernet frame of `size` bytes; `n` varies the values."""
    t = DEFAULT_START_NS + n * 1_000_000
    stack = bytes((n + i) % 251 + 1 for i in range(mcds * MCD_SIZE))  # no all-zero MCD: every one a hop
    before = bytes((1, padn)) + bytes(padn) if padn else b""
    after_hbh = NH_DEST_OPTS if dest_units else NH_ROUTING
    sids = [f"fcbb:bb00:{k:x}::" for k in range(1, segments + 1)]
    tlv = PtTlv(0x123, 1, t, 7, n & 0xFFFF).pack()
    body = hop_by_hop(after_hbh, stack, before=before)
    if dest_units:
        body += dest_opts(NH_ROUTING, dest_units)
    body += srh(NH_NONE, sids, tlv)
    inner_size = size - 14 - 40 - 24  # Ethernet, outer IPv6, the sink's SRH
    payload = bytes(inner_size - 40 - len(body))
    inner = ipv6(CRAFTED_SOURCE, sids[-1], NH_HOP_BY_HOP, body + payload)
    sink = PtTlv(0x456, 2, t + 3_000_000)
    frame = ethernet(encapsulate(inner, CRAFTED_SINK, "2001:db8:c011::1", sink))
    assert len(frame) == size, (len(frame), size)
    return frame


def crafted_frames(count: int, size: int = FRAME_SIZE) -> list[bytes]:
    """`count` frames of `size` bytes, no two with the same layout."""
    return [crafted_packet(*mix, n=n, size=size) for n, mix in zip(range(count), layouts(), strict=False)]


def crafted_varied(count: int, seed: int = 3) -> list[bytes]:
    """`count` frames of distinct layouts and lengths (600 to 1,000 bytes)."""
    rng = random.Random(seed)
    mixes = list(itertools.islice(layouts(), count))
    return [crafted_packet(*mix, n=n, size=rng.randrange(600, 1001)) for n, mix in enumerate(mixes)]


def mutations(probes: list[bytes], count: int, seed: int = 4) -> list[bytes]:
    """`count` probes, each with one to three random bytes changed at random places."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        frame = bytearray(probes[i % len(probes)])
        for _ in range(rng.randrange(1, 4)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        out.append(bytes(frame))
    return out


def _bits(n: int, k: int) -> int:
    return (n >> (k % 16)) & 1


def many_options(count: int, options: int = 600) -> list[bytes]:
    """`count` probes of about 1,400 bytes whose HbH holds ~`options` zero-length options, each frame its own mix."""
    out = []
    for n in range(count):
        before = b"".join(bytes((0x1E + _bits(n, k), 0)) for k in range(options + n % 7))
        tlv = PtTlv(1, 1, 10**18, 1, n).pack()
        body = hop_by_hop(NH_ROUTING, bytes(36), before=before) + srh(NH_NONE, ["fcbb::1"], tlv)
        inner = ipv6(CRAFTED_SOURCE, "fcbb::1", NH_HOP_BY_HOP, body)
        out.append(ethernet(encapsulate(inner, CRAFTED_SINK, "2001:db8:c011::1", PtTlv(2, 1, 10**18))))
    return out


def many_headers(count: int, headers: int = 150) -> list[bytes]:
    """`count` probes with ~`headers` 8-byte extension headers (Destination Options or Routing) before the SRH."""
    out = []
    for n in range(count):
        kinds = [NH_DEST_OPTS if _bits(n, k) else NH_ROUTING for k in range(headers + n % 7)] + [NH_ROUTING]
        chain = b"".join(
            bytes((kinds[k + 1], 0, 1, 4, 0, 0, 0, 0) if kind == NH_DEST_OPTS else (kinds[k + 1], 0, 0, 0, 0, 0, 0, 0))
            for k, kind in enumerate(kinds[:-1])
        )
        body = hop_by_hop(kinds[0], bytes(36)) + chain + srh(NH_NONE, ["fcbb::1"], PtTlv(1, 1, 10**18, 1, n).pack())
        inner = ipv6(CRAFTED_SOURCE, "fcbb::1", NH_HOP_BY_HOP, body)
        out.append(ethernet(encapsulate(inner, CRAFTED_SINK, "2001:db8:c011::1", PtTlv(2, 1, 10**18))))
    return out
