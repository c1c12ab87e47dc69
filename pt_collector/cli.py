"""The `ptc` command: thin click wrappers around the library.

Exit status: 0 success, 1 the work failed or was incomplete (a capture
file unreadable, an output that cannot be written), 2 a usage error.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

import click

from . import __version__
from .decode import Decoder
from .encode import ethernet, linux_sll, linux_sll2
from .generate import generate as generate_probes
from .pcap import PcapWriter
from .replay import ReplayStats
from .replay import replay as run_replay
from .sinks import JsonLinesSink
from .tts import MAX_SHIFT
from .wire import ETH_P_VLAN, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW

EXIT_FAILED = 1
T = TypeVar("T")

TTS_SHIFT_HELP = (
    "TTS template shift (0..24) of the midpoints, for midpoint time reconstruction; "
    "without it every hop's time_ns is null. It is a per-router setting, not in the packet: "
    "upstream VPP template 2 is 16, the original VPP default 18, Linux template 1 is 18."
)


class Failed(click.ClickException):
    """The command ran but could not do all of its work."""

    exit_code = EXIT_FAILED


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ptc")
def main() -> None:
    """ptc: the SRv6 Path Tracing probe collector.

    Decodes PT probes (HbH MCD stacks, SRH PT TLVs) into records
    (record schema v1) and writes them out.
    """


def run_async(coro: Coroutine[object, object, T]) -> T:
    """Run a coroutine on uvloop: installed here, at the entry point only."""
    import uvloop

    return uvloop.run(coro)


@contextlib.contextmanager
def _open_output(output: str) -> Iterator[BinaryIO]:
    if output == "-":
        yield sys.stdout.buffer
        return
    try:
        stream = open(output, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise Failed(f"cannot write {output}: {exc.strerror}") from None
    with stream:
        yield stream


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o", "--output", required=True, metavar="FILE",
    help="Write records as JSON lines to FILE ('-' for stdout).",
)  # fmt: skip
@click.option("--tts-shift", type=click.IntRange(0, MAX_SHIFT), default=None, help=TTS_SHIFT_HELP)
@click.option(
    "--progress/--no-progress", default=None,
    help="Show a progress line on stderr [default: when stderr is a terminal].",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
def replay(files: tuple[Path, ...], output: str, tts_shift: int | None, progress: bool | None, quiet: bool) -> None:
    """Decode PT probes from capture FILES (pcap or pcapng).

    Link types: Ethernet (802.1Q/802.1ad tags too), Linux cooked (SLL, SLL2)
    and raw IPv6. Every frame is counted once: decoded, not PT, or
    malformed (by reason); a summary goes to stderr at the end.

    Exit status 0 when every file was read to its end, 1 when a file could
    not be read (the frames before the damage are still decoded).
    """
    decoder = Decoder(tts_shift)
    show_progress = sys.stderr.isatty() if progress is None else progress
    with _open_output(output) as stream, _progress(show_progress) as on_batch:
        try:
            stats = run_async(run_replay(files, decoder, JsonLinesSink(stream), on_batch))
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (| head): nothing left to report
            raise SystemExit(0) from None
    if not quiet:
        click.echo(stats.summary(), err=True)
    for error in stats.capture_errors:
        click.echo(f"ptc: error: {error}", err=True)
    if stats.capture_errors:
        raise SystemExit(EXIT_FAILED)


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[object]:
    """A rich live line of frames, probes and rate; yields the replay callback."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replaying")

        def on_batch(stats: ReplayStats) -> None:
            bar.update(task, description=f"{stats.frames:,} frames, {stats.probes:,} probes")

        yield on_batch


LINKS = {
    "ethernet": (LINKTYPE_ETHERNET, ethernet),
    "vlan": (LINKTYPE_ETHERNET, lambda p: ethernet(p, vlans=[(ETH_P_VLAN[0], 100)])),
    "qinq": (LINKTYPE_ETHERNET, lambda p: ethernet(p, vlans=[(ETH_P_VLAN[1], 200), (ETH_P_VLAN[0], 100)])),
    "sll": (LINKTYPE_LINUX_SLL, linux_sll),
    "sll2": (LINKTYPE_LINUX_SLL2, linux_sll2),
    "raw": (LINKTYPE_RAW, lambda p: p),
}


@main.command()
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=False, path_type=Path))
@click.option("-n", "--count", type=click.IntRange(min=0), default=1000, show_default=True, help="Probes to write.")
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
    type=click.IntRange(0, MAX_SHIFT),
    default=18,
    show_default=True,
    help="TTS shift the midpoints stamp with.",
)
@click.option(
    "--link", type=click.Choice(sorted(LINKS)), default="ethernet", show_default=True, help="Link layer of the capture."
)
@click.option("--interval-us", type=click.IntRange(min=1), default=1000, show_default=True, help="Time between probes.")
def generate(
    out: Path,
    count: int,
    hops: int,
    segments: int,
    encap: bool,
    sources: int,
    seed: int,
    tts_shift: int,
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
        tts_shift=tts_shift, interval_ns=interval_us * 1000,
    )  # fmt: skip
    try:
        with open(out, "wb") as stream:
            writer = PcapWriter(stream, linktype)
            for capture_ns, packet in probes:
                writer.write(capture_ns, frame_of(packet))
    except OSError as exc:
        raise Failed(f"cannot write {out}: {exc.strerror}") from None
    click.echo(f"wrote {count:,} probes to {out}", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
