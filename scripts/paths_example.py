#!/usr/bin/env python3
"""The capture behind docs/paths-plot.png: 8 paths x 2,500 probes, with loss.

    python scripts/paths_example.py OUT.pcap
    ptc paths OUT.pcap --tts-shift 18 --plot docs/paths-plot.png

Six sources on their own paths (pt_collector.codec.generate, TTS shift 18), and sources 1 and 2 again
towards the same sinks through other midpoints (another seed: other interface ids). Source 3 loses a burst
of 60 probes, source 5 one probe in 50 for a while: sequence gaps, the plot's loss marks.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pt_collector.capture.pcap import PcapWriter
from pt_collector.codec.encode import ethernet
from pt_collector.codec.generate import DEFAULT_START_NS, generate
from pt_collector.codec.wire import LINKTYPE_ETHERNET

PER_PATH = 2500
INTERVAL_NS = 4_000_000  # 6 sources: each sends every 24 ms, for a minute


def lost(n: int) -> bool:
    """Probe n of the main run (round-robin over 6 sources) is dropped on the way."""
    source, number = n % 6 + 1, n // 6
    return (source == 3 and 900 <= number < 960) or (source == 5 and 1500 <= number < 2100 and number % 50 == 0)


def main() -> None:
    main_run = [p for n, p in enumerate(generate(6 * PER_PATH, sources=6, interval_ns=INTERVAL_NS)) if not lost(n)]
    others = generate(
        2 * PER_PATH, sources=2, seed=7, interval_ns=3 * INTERVAL_NS, start_ns=DEFAULT_START_NS + 1_000_000
    )
    with open(sys.argv[1], "wb") as stream:
        writer = PcapWriter(stream, LINKTYPE_ETHERNET)
        for capture_ns, packet in sorted([*main_run, *others]):
            writer.write(capture_ns, ethernet(packet))


if __name__ == "__main__":
    main()
