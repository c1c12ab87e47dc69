"""Capture files: pcap (us, ns, either byte order) and pcapng."""

from __future__ import annotations

import struct

import pytest

from pt_collector.capture.pcap import CaptureError, PcapWriter, read_capture

FRAMES = [b"\x01" * 60, b"\x02" * 61, b"\x03" * 14]
T = 1_643_211_426_123_456_789


def pcap_bytes(order: str, magic: int, frac_of) -> bytes:
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    for i, frame in enumerate(FRAMES):
        sec, nsec = divmod(T + i, 10**9)
        out += struct.pack(order + "IIII", sec, frac_of(nsec), len(frame), len(frame)) + frame
    return out


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_microseconds_and_nanoseconds(tmp_path, order):
    us = tmp_path / "us.pcap"
    us.write_bytes(pcap_bytes(order, 0xA1B2C3D4, lambda ns: ns // 1000))
    ns = tmp_path / "ns.pcap"
    ns.write_bytes(pcap_bytes(order, 0xA1B23C4D, lambda ns: ns))
    assert list(read_capture(ns)) == [(1, T + i, f) for i, f in enumerate(FRAMES)]
    assert list(read_capture(us)) == [(1, (T + i) // 1000 * 1000, f) for i, f in enumerate(FRAMES)]


def test_writer_round_trip(tmp_path):
    path = tmp_path / "w.pcap"
    with open(path, "wb") as f:
        writer = PcapWriter(f, 276)
        for i, frame in enumerate(FRAMES):
            writer.write(T + i, frame)
    assert list(read_capture(path)) == [(276, T + i, f) for i, f in enumerate(FRAMES)]


def test_pcapng_written_by_scapy(pcaps):
    frames = list(read_capture(pcaps / "mixed.pcapng"))
    assert len(frames) == 10
    assert {lt for lt, _, _ in frames} == {1}
    assert frames[0][1] == 1_643_211_426_000_000_000
    assert frames[1][1] - frames[0][1] == 1_000_000


def block(kind: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def test_pcapng_with_nanosecond_resolution_two_interfaces_and_simple_packets(tmp_path):
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    tsresol_ns = struct.pack("<HHB3x", 9, 1, 9) + struct.pack("<HH", 0, 0)
    idb_eth = block(1, struct.pack("<HHI", 1, 0, 0) + tsresol_ns)
    idb_raw = block(1, struct.pack("<HHI", 101, 0, 0))  # default microseconds
    ts = T
    epb0 = block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, 60, 60) + FRAMES[0])
    ts_us = T // 1000
    epb1 = block(6, struct.pack("<IIIII", 1, ts_us >> 32, ts_us & 0xFFFFFFFF, 61, 61) + FRAMES[1])
    spb = block(3, struct.pack("<I", 14) + FRAMES[2])
    unknown = block(0x0BAD, b"skip me!")
    path = tmp_path / "x.pcapng"
    path.write_bytes(shb + idb_eth + idb_raw + epb0 + unknown + epb1 + spb)
    assert list(read_capture(path)) == [(1, T, FRAMES[0]), (101, T // 1000 * 1000, FRAMES[1]), (1, 0, FRAMES[2])]


def test_truncated_capture_gives_the_frames_before_the_damage(tmp_path):
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap_bytes("<", 0xA1B23C4D, lambda ns: ns)[:-5])
    frames = []
    with pytest.raises(CaptureError, match="cut short"):
        for frame in read_capture(path):
            frames.append(frame)
    assert [f for _, _, f in frames] == FRAMES[:2]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"abc", "too short"),
        (b"GIF89a" + bytes(40), "not a pcap or pcapng"),
        (b"\xd4\xc3\xb2\xa1" + bytes(4), "header cut short"),
    ],
)
def test_not_a_capture(tmp_path, content, message):
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match=message):
        list(read_capture(path))


def test_corrupt_record_length(tmp_path):
    data = bytearray(pcap_bytes("<", 0xA1B23C4D, lambda ns: ns))
    struct.pack_into("<I", data, 24 + 8, 10**9)
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(data))
    with pytest.raises(CaptureError, match="corrupt"):
        list(read_capture(path))
