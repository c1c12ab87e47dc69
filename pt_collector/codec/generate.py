"""Realistic PT probe traffic: sources, midpoints and sinks played out in time.

Each source node sends probes along its own SRv6 path; every midpoint pushes
its MCD with a TTS taken from its own egress time, the sink stamps its
receive time and encapsulates the probe toward the collector. The bytes
come from ptc's encoder twin, so tests and benchmarks need no scapy.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .encode import PtTlv, encapsulate, mcd, probe, push_mcd
from .wire import NS_PER_S

COLLECTOR = "2001:db8:c011::1"
DEFAULT_START_NS = 1_643_211_426_000_000_000  # 2022-01-26, the testbed's day


@dataclass(frozen=True)
class Path:
    """One source node's probe session along one SRv6 path."""

    src: str
    sink: str
    segments: tuple[str, ...]  # path order; the last one is the destination
    src_if: int
    sink_if: int
    midpoint_ifs: tuple[int, ...]  # path order
    session_id: int


def make_paths(sources: int, hops: int, segments: int, rng: random.Random) -> list[Path]:
    paths = []
    for n in range(1, sources + 1):
        segs = tuple(f"fcbb:bb00:{n:x}:{k:x}::" for k in range(1, segments + 1)) or (f"fcbb:bb00:{n:x}::e",)
        paths.append(
            Path(
                src=f"2001:db8:{n:x}::1",
                sink=f"2001:db8:e{n:03x}::1",
                segments=segs,
                src_if=rng.randrange(1, 4096),
                sink_if=rng.randrange(1, 4096),
                midpoint_ifs=tuple(rng.randrange(1, 4096) for _ in range(hops)),
                session_id=n,
            )
        )
    return paths


def tts_of(time_ns: int, shift: int) -> int:
    """The TTS a midpoint stamps: bits [shift, shift+8) of its nanoseconds-of-second."""
    return (time_ns % NS_PER_S) >> shift & 0xFF


def generate(
    count: int,
    *,
    hops: int = 5,
    segments: int = 3,
    encap: bool = True,
    seed: int = 1,
    sources: int = 4,
    tts_shift: int | Sequence[int] = 18,
    start_ns: int = DEFAULT_START_NS,
    interval_ns: int = 1_000_000,
) -> Iterator[tuple[int, bytes]]:
    """(capture time, IPv6 packet) for `count` probes, round-robin over the sources.

    `tts_shift`: the midpoints' shift, or one per source in turn (a fleet whose routers differ).
    """
    shifts = [tts_shift] if isinstance(tts_shift, int) else list(tts_shift)
    rng = random.Random(seed)
    paths = make_paths(sources, hops, segments, rng)
    sequences = [0] * len(paths)
    for i in range(count):
        n = i % len(paths)
        path = paths[n]
        sequences[n] = (sequences[n] + 1) & 0xFFFF
        t = start_ns + i * interval_ns
        src_tlv = PtTlv(path.src_if, rng.randrange(4), t, path.session_id, sequences[n])
        packet = probe(path.src, path.segments[-1], path.segments, src_tlv, hop_limit=64)
        for if_id in path.midpoint_ifs:
            t += rng.randrange(100_000, 5_000_000)  # 0.1 to 5 ms per hop: well inside one TTS wrap
            packet = push_mcd(packet, mcd(if_id, rng.randrange(4), tts_of(t, shifts[n % len(shifts)])))
        t += rng.randrange(100_000, 5_000_000)
        if encap:
            packet = encapsulate(packet, path.sink, COLLECTOR, PtTlv(path.sink_if, rng.randrange(4), t))
        yield t + rng.randrange(10_000, 200_000), packet
