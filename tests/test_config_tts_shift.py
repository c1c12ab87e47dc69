"""Per-source TTS shift: the template is a router's setting, so sources' paths may differ."""

from __future__ import annotations

from ipaddress import IPv6Network

import pytest
from click.testing import CliRunner

from pt_collector import Decoder
from pt_collector.capture.pcap import PcapWriter
from pt_collector.cli.main import main
from pt_collector.codec.encode import PtTlv, encapsulate, ethernet, mcd, probe, push_mcd
from pt_collector.codec.generate import tts_of
from pt_collector.codec.record import Record, from_json_lines
from pt_collector.codec.wire import LINKTYPE_ETHERNET, NS_PER_S

START = 1_643_211_426 * NS_PER_S + 123_456_789
MIDPOINT_DELAYS = (1_300_000, 2_700_000)  # ns from the source to each midpoint in turn
SINK_DELAY = 900_000


def window_of(ns: int, shift: int) -> int:
    """What reconstruction gives for a midpoint at `ns`: the start of its TTS window."""
    return ns - (ns % NS_PER_S) % (1 << shift)


def probe_from(src: str, shift: int, start_ns: int = START) -> tuple[bytes, list[int]]:
    """An encapsulated probe whose midpoints stamp TTS with `shift`, and its midpoints' true times."""
    t = start_ns
    packet = probe(src, "fcbb:bb00:1::", ["fcbb:bb00:1::"], PtTlv(11, 0, t, 1, 1))
    times = []
    for if_id, delay in zip((101, 102), MIDPOINT_DELAYS, strict=True):
        t += delay
        times.append(t)
        packet = push_mcd(packet, mcd(if_id, 0, tts_of(t, shift)))
    packet = encapsulate(packet, "2001:db8:e::1", "2001:db8:c011::1", PtTlv(12, 0, t + SINK_DELAY))
    return ethernet(packet), times


def hop_times(record: Record | None) -> list[int | None]:
    assert record is not None
    return [hop.time_ns for hop in record.hops]


SHIFTS = {"2001:db8:1::/48": 16, "2001:db8:2::/48": 20}


def test_two_sources_two_shifts():
    decoder = Decoder(shift_by_source=SHIFTS)
    for src, shift in (("2001:db8:1::7", 16), ("2001:db8:2::7", 20)):
        frame, times = probe_from(src, shift)
        expected = [window_of(t, shift) for t in times]
        assert hop_times(decoder.decode(frame)) == expected
        assert hop_times(decoder.decode(frame)) == expected  # the cached layout too
        assert hop_times(Decoder(tts_shift=shift).decode(frame)) == expected
        other = 20 if shift == 16 else 16
        assert hop_times(Decoder(tts_shift=other).decode(frame)) != expected  # the map is what made it right


def test_longest_prefix_wins_and_the_rest_get_tts_shift():
    decoder = Decoder(tts_shift=18, shift_by_source={"2001:db8::/32": 20, IPv6Network("2001:db8:1::/48"): 16})
    assert [decoder.shift_for(a) for a in ("2001:db8:1::1", "2001:db8:9::1", "2001:db9::1")] == [16, 20, 18]
    assert Decoder(shift_by_source={"2001:db8::/32": 20}).shift_for("fd00::1") is None
    frame, times = probe_from("2001:db9::1", 18)
    assert hop_times(decoder.decode(frame)) == [window_of(t, 18) for t in times]
    frame, _ = probe_from("fd00::1", 18)
    assert hop_times(Decoder(shift_by_source={"2001:db8::/32": 20}).decode(frame)) == [None, None]


def test_a_bad_map_is_refused():
    with pytest.raises(ValueError, match=r"TTS shift must be 0\.\.24"):
        Decoder(shift_by_source={"2001:db8::/32": 25})
    with pytest.raises(ValueError, match="host bits"):
        Decoder(shift_by_source={"2001:db8::1/32": 16})


def test_replay_and_config_check_use_the_file_map(tmp_path):
    pcap = tmp_path / "two.pcap"
    frames = [probe_from(src, shift, START + n * 10_000_000) for n, (src, shift) in enumerate(
        [("2001:db8:1::7", 16), ("2001:db8:2::7", 20), ("2001:db8:3::7", 18)] * 2
    )]  # fmt: skip
    with open(pcap, "wb") as stream:
        writer = PcapWriter(stream, LINKTYPE_ETHERNET)
        for frame, times in frames:
            writer.write(times[-1] + 5_000_000, frame)
    config = tmp_path / "ptc.toml"
    config.write_text('tts_shift = 18\n[tts_shift_by_source]\n"2001:db8:1::/48" = 16\n"2001:db8:2::/48" = 20\n')
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(config), "replay", str(pcap), "-o", "-", "-q"])
    assert result.exit_code == 0, result.output
    records = from_json_lines(result.stdout.encode())
    expected_shifts = [16, 20, 18] * 2
    assert [hop_times(r) for r in records] == [
        [window_of(t, shift) for t in times] for (_, times), shift in zip(frames, expected_shifts, strict=True)
    ]
    check = runner.invoke(main, ["config", "check", str(config)])
    assert '"2001:db8:1::/48" = 16\n"2001:db8:2::/48" = 20\n' in check.stdout
