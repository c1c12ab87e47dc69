"""`ptc generate`: a capture file of realistic PT probes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..capture.pcap import PcapWriter
from ..codec.encode import ethernet, linux_sll, linux_sll2
from ..codec.generate import generate as generate_probes
from ..codec.shift_infer import AUTO
from ..codec.tts import MAX_SHIFT
from ..codec.wire import ETH_P_VLAN, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW
from ..ops.config import TtsShift
from .common import (
    Failed,
)

LINKS = {
    "ethernet": (LINKTYPE_ETHERNET, ethernet),
    "vlan": (LINKTYPE_ETHERNET, lambda p: ethernet(p, vlans=[(ETH_P_VLAN[0], 100)])),
    "qinq": (LINKTYPE_ETHERNET, lambda p: ethernet(p, vlans=[(ETH_P_VLAN[1], 200), (ETH_P_VLAN[0], 100)])),
    "sll": (LINKTYPE_LINUX_SLL, linux_sll),
    "sll2": (LINKTYPE_LINUX_SLL2, linux_sll2),
    "raw": (LINKTYPE_RAW, lambda p: p),
}


class ShiftList(TtsShift):
    """Comma-separated TTS shifts 0..24 (`auto`, which a config file's top-level tts_shift may say for replay and
    collect, is the default here: generate stamps with known shifts)."""

    name = "shifts"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        """One shift as an int (as ptc config check shows it); several as "16,18,20"."""
        parts = str(value).strip().lower().replace(AUTO, "18").split(",")
        if not all(p.strip().isdigit() and int(p) <= MAX_SHIFT for p in parts):
            self.fail(f"{value!r}: TTS shifts 0..{MAX_SHIFT}, comma-separated", param, ctx)
        return int(parts[0]) if len(parts) == 1 else ",".join(str(int(p)) for p in parts)


@click.command(short_help="Write a pcap file of realistic PT probes.")
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=False, path_type=Path))
@click.option("-c", "--count", type=click.IntRange(min=0), default=1000, show_default=True, help="Probes to write.")
@click.option(
    "--hops",
    type=click.IntRange(0, 64),
    default=5,
    show_default=True,
    help="PT midpoints per path (the stack keeps the newest 12).",
)
@click.option("--segments", type=click.IntRange(0, 16), default=3, show_default=True, help="SIDs in each probe's SRH.")
@click.option(
    "--encap/--bare",
    default=True,
    show_default=True,
    help="As the sink sends them to a collector, or as the source sends them.",
)
@click.option(
    "--sources",
    type=click.IntRange(1, 4096),
    default=4,
    show_default=True,
    help="Source nodes, each with its own path and session.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed for interface ids, loads and delays.")
@click.option(
    "--tts-shift",
    type=ShiftList(),
    default=18,
    show_default=True,
    metavar="SHIFT[,SHIFT...]",
    help="TTS shift the midpoints stamp with; several (16,18,20): one per source in turn, a fleet of mixed routers.",
)
@click.option(
    "--link", type=click.Choice(sorted(LINKS)), default="ethernet", show_default=True, help="Link layer of the capture."
)
@click.option(
    "--interval-us", type=click.IntRange(min=1), default=1000, show_default=True, metavar="US",
    help="Time between probes, in microseconds.",
)  # fmt: skip
def generate(
    out: Path,
    count: int,
    hops: int,
    segments: int,
    encap: bool,
    sources: int,
    seed: int,
    tts_shift: int | str,
    link: str,
    interval_us: int,
) -> None:
    """Write COUNT realistic PT probes to the pcap file OUT.

    Each source sends along its own SRv6 path; midpoints push MCDs with TTS
    from their egress times; with --encap the sink stamps its time and
    encapsulates the probe toward a collector.
    """
    linktype, frame_of = LINKS[link]
    probes = generate_probes(
        count, hops=hops, segments=segments, encap=encap, seed=seed, sources=sources,
        tts_shift=[int(p) for p in str(tts_shift).split(",")], interval_ns=interval_us * 1000,
    )  # fmt: skip
    try:
        with open(out, "wb") as stream:
            writer = PcapWriter(stream, linktype)
            for capture_ns, packet in probes:
                writer.write(capture_ns, frame_of(packet))
    except OSError as exc:
        raise Failed(f"cannot write {out}: {exc.strerror}") from None
    click.echo(f"wrote {count:,} probes to {out}", err=True)
