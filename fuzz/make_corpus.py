"""Write the hand-made edge-case frames of tests/corpus/ (deterministic: rerunning gives the same bytes).

    python fuzz/make_corpus.py [DIR]      # default tests/corpus

tests/corpus/ also holds inputs the fuzzer found (`crash-<sha1>`, the
fuzzer's own name for them); this script leaves those alone.
Each file is one frame, Ethernet unless its name says otherwise; tests/test_corpus.py decodes every
file under every link type.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pt_collector.codec.encode import (
    PtTlv,
    encapsulate,
    ethernet,
    hop_by_hop,
    ipv6,
    linux_sll,
    linux_sll2,
    mcd,
    probe,
    srh,
)
from pt_collector.codec.wire import (
    NH_DEST_OPTS,
    NH_FRAGMENT,
    NH_HOP_BY_HOP,
    NH_IPV6,
    NH_NONE,
    NH_ROUTING,
    NH_UDP,
    TLV_PT,
)

SRC, SINK, COLLECTOR = "2001:db8:1::1", "2001:db8:e::1", "2001:db8:c::1"
IPV6 = 40
HBH = 14 + IPV6 + 24 + IPV6  # Ethernet + outer IPv6 + outer SRH (no segments) + inner IPv6: the probe's HbH


def bare(mcds: tuple[bytes, ...] = (mcd(5, 1, 7),), **kwargs) -> bytes:
    return probe(SRC, "fcbb::2", ("fcbb::1", "fcbb::2"), PtTlv(11, 3, 10**18, 1, 2), mcds, **kwargs)


def encap(inner: bytes | None = None) -> bytes:
    return encapsulate(bare() if inner is None else inner, SINK, COLLECTOR, PtTlv(21, 0, 10**18 + 5))


def edit(frame: bytes, offset: int, value: int) -> bytes:
    data = bytearray(frame)
    data[offset] = value
    return bytes(data)


def corpus() -> dict[str, bytes]:
    good = ethernet(encap())
    only_hbh = ipv6(SRC, "fcbb::2", NH_HOP_BY_HOP, hop_by_hop(NH_NONE, mcd(5, 0, 7) + bytes(9)))
    return {
        # valid probes of every link type, and shapes at the edges of what is allowed
        "valid-encap": good,
        "valid-bare": ethernet(bare()),
        "valid-sll": linux_sll(encap()),
        "valid-sll2": linux_sll2(encap()),
        "valid-raw-ipv6": encap(),
        "valid-three-vlan-tags": ethernet(encap(), vlans=[(0x88A8, 1), (0x8100, 2), (0x9100, 3)]),
        "valid-opt-data-len-255": ethernet(bare(opt_data_len=255)),
        "valid-opt-data-len-0": ethernet(bare((), opt_data_len=0)),
        "valid-no-srh": ethernet(only_hbh),
        "valid-srh-udp-payload": ethernet(bare(payload_next_header=NH_UDP, payload=bytes(8))),
        "valid-tlv-over-last-sid": ethernet(
            ipv6(
                SINK,
                COLLECTOR,
                NH_ROUTING,
                srh(NH_IPV6, ("fcbb::9", "fcbb::a"), b"")[:8] + bytes(16) + PtTlv(21, 0, 10**18 + 5).pack() + bare(),
            )
        ),
        # malformed: DecodeError
        "opt-data-len-35": edit(good, HBH + 3, 35),
        "opt-data-len-1": edit(good, HBH + 3, 1),
        "pt-option-past-hbh": edit(good, HBH + 3, 39),
        "hbh-past-packet": edit(ethernet(bare()), 14 + IPV6 + 1, 200),
        "srh-past-frame": good[:-20],
        "srh-cut-in-fixed-part": good[: HBH + 40 + 4],
        "srh-segments-past-header": edit(ethernet(bare()), 14 + IPV6 + 40 + 4, 9),
        "no-pt-tlv": edit(ethernet(bare()), 14 + IPV6 + 40 + 8 + 32, 4),
        "pt-tlv-length-12": edit(ethernet(bare()), 14 + IPV6 + 40 + 8 + 32 + 1, 12),
        "srh-tlv-past-header": edit(ethernet(bare()), 14 + IPV6 + 40 + 8 + 32 + 1, 200),
        "inner-payload-past-outer": edit(good, 14 + IPV6 + 24 + 5, 255),
        "sink-tlv-inner-not-ipv6": ethernet(
            ipv6(SINK, COLLECTOR, NH_ROUTING, srh(NH_UDP, (), PtTlv(1, 0, 5).pack()) + bytes(8))
        ),
        "sink-tlv-inner-udp": ethernet(
            ipv6(SINK, COLLECTOR, NH_ROUTING, srh(NH_IPV6, (), PtTlv(1, 0, 5).pack()) + ipv6(SRC, SINK, NH_UDP, b""))
        ),
        "outer-srh-pt-tlv-past-header": ethernet(
            ipv6(SINK, COLLECTOR, NH_ROUTING, srh(NH_IPV6, (), bytes((TLV_PT, 14)) + bytes(6)) + bare())
        ),
        # not PT, or cut before claiming it
        "empty": b"",
        "ethernet-header-only": good[:14],
        "ipv6-header-cut": good[: 14 + 30],
        "hbh-without-pt": ethernet(ipv6(SRC, "fcbb::2", NH_HOP_BY_HOP, bytes((NH_NONE, 0, 1, 4, 0, 0, 0, 0)))),
        "fragment-then-dest-opts": ethernet(
            ipv6(SRC, SINK, NH_FRAGMENT, bytes((NH_DEST_OPTS, 0)) + bytes(6) + bytes((NH_NONE, 0)) + bytes(6))
        ),
        # a probe whose HbH header names another extension header, and the packet ends right after the HbH
        "crash-hbh-then-dest-opts-at-frame-end": ethernet(
            ipv6(SRC, "fcbb::2", NH_HOP_BY_HOP, hop_by_hop(NH_DEST_OPTS, mcd(5, 0, 7) + bytes(9)))
        ),
    }


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "tests" / "corpus")
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in corpus().items():
        (out / name).write_bytes(frame)
    print(f"{len(corpus())} frames in {out}")


if __name__ == "__main__":
    main()
