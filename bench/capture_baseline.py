#!/usr/bin/env python3
"""The baseline live collector: a blocking packet socket and scapy, as a quick Python collector would be.

    python bench/capture_baseline.py --iface IFACE [--output FILE] [--stats-interval SECONDS]

One AF_PACKET socket bound to IFACE for IPv6 frames (ETH_P_IPV6: the kernel
drops every other EtherType, no BPF program), the default receive buffer,
and a blocking recv() per frame. Each frame is parsed by scapy (`Ether(frame)`)
and the PT fields read from its layers into a dict: the sink's SRH TLV and
address when encapsulated, the source's IPv6 header, the Hop-by-Hop PT
option's MCD stack, the SRH segments and the source's PT TLV. The dict goes
out as a JSON line, as ptc's records do with `--output`.

Counters go to stderr as one JSON object every --stats-interval seconds and
on SIGINT/SIGTERM (which stop it, exit 0): frames read, probes decoded, not
PT, and the socket's PACKET_STATISTICS (kernel received, kernel dropped).
The counters are the benchmark's instrument, not part of the collector loop.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import time

from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop, IPv6ExtHdrSegmentRouting
from scapy.layers.inet6 import IPv6ExtHdrSegmentRoutingTLV as SrhTlv
from scapy.layers.l2 import Ether

ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_STATISTICS = 6
ETHER_LEN, IPV6_LEN = 14, 40  # the socket delivers an outer VLAN tag as metadata, not in the frame
PT_OPTION = 0x32  # Hop-by-Hop option type of the MCD stack
PT_TLV = 128  # SRH TLV type of the source's (and the sink's) PT data


class Counters:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = self.decoded = self.not_pt = self.errors = 0
        self.kernel_received = self.kernel_dropped = 0

    def line(self) -> str:
        received, dropped = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.kernel_received += received  # the kernel resets its counters on every read
        self.kernel_dropped += dropped
        return json.dumps(
            {
                "frames": self.frames,
                "decoded": self.decoded,
                "not_pt": self.not_pt,
                "errors": self.errors,
                "kernel_received": self.kernel_received,
                "kernel_dropped": self.kernel_dropped,
            }
        )


def pt_tlv(tlvs: list) -> dict | None:
    for tlv in tlvs:
        if tlv.type == PT_TLV and len(tlv.value) >= 14:
            if_word, sec, nsec, session, seq = struct.unpack(">HIIHH", tlv.value[:14])
            return {
                "if_id": if_word >> 4,
                "if_load": if_word & 0xF,
                "sec": sec,
                "nsec": nsec,
                "session": session,
                "seq": seq,
            }
    return None


def decode(frame: bytes, capture_ns: int) -> dict | None:
    """A probe's fields as a dict, or None when the frame is not a PT probe."""
    packet = Ether(frame)
    if IPv6 not in packet:
        return None
    ip = packet[IPv6]
    sink = None
    if ip.nh == 43 and ip.payload.nh == 41:  # encapsulated by the sink: outer IPv6 + SRH with its TLV, then the probe
        # scapy reads an SRH with no segments (last entry 255, as the sink sends it) as segments up to its
        # end and never finds the TLV or the inner packet: take the SRH's bytes from the frame and parse again
        at = ETHER_LEN + IPV6_LEN
        srh_end = at + 8 + frame[at + 1] * 8
        tlv = pt_tlv([SrhTlv(frame[at + 8 : srh_end])])
        sink = {"addr": ip.src, **tlv} if tlv else None
        ip = IPv6(frame[srh_end:])
    if IPv6ExtHdrHopByHop not in ip or IPv6ExtHdrSegmentRouting not in ip:
        return None
    mcds = []
    for option in ip[IPv6ExtHdrHopByHop].options:
        if option.otype == PT_OPTION:
            data = bytes(option.optdata)
            for at in range(0, len(data) - 2, 3):
                word = int.from_bytes(data[at : at + 3], "big")
                if word:
                    mcds.append({"if_id": word >> 12, "if_load": word >> 8 & 0xF, "tts": word & 0xFF})
            break
    else:
        return None
    mcds.reverse()  # the stack is newest first; hops go in path order, as ptc's records have them
    srh = ip[IPv6ExtHdrSegmentRouting]
    source = pt_tlv(srh.tlv_objects)
    if source is None:
        return None
    return {
        "capture_ns": capture_ns,
        "src": {"addr": ip.src, **source},
        "sink": sink,
        "dst": ip.dst,
        "segments": list(reversed(srh.addresses)),
        "hops": mcds,
        "traffic_class": ip.tc,
        "flow_label": ip.fl,
        "hop_limit": ip.hlim,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iface", required=True)
    parser.add_argument("--output", default="/dev/null", help="JSON lines out (default: /dev/null)")
    parser.add_argument("--stats-interval", type=float, default=5.0, metavar="SECONDS")
    args = parser.parse_args()

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
    sock.bind((args.iface, ETH_P_IPV6))
    counters = Counters(sock)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        sock.settimeout(0.0)  # the blocking recv returns now (EAGAIN) or after what is still queued

    def report(signum: int, frame: object) -> None:
        print(counters.line(), file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, report)
    signal.setitimer(signal.ITIMER_REAL, args.stats_interval, args.stats_interval)

    with open(args.output, "w") as out:
        while True:
            try:
                frame = sock.recv(65535)
            except BlockingIOError:
                break
            counters.frames += 1
            try:
                record = decode(frame, time.time_ns())
            except Exception:
                counters.errors += 1
                continue
            if record is None:
                counters.not_pt += 1
            else:
                counters.decoded += 1
                out.write(json.dumps(record) + "\n")
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(counters.line(), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
