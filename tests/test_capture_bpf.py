"""Capture filters without a network: DEFAULT_PROGRAM run by a small classic BPF interpreter, tcpdump compiling."""

from __future__ import annotations

import socket
import subprocess

import pytest

from pt_collector.capture import bpf
from pt_collector.capture.bpf import DEFAULT_PROGRAM, FilterError, attach_filter, compile_expression, parse_ddd
from pt_collector.codec import encode
from pt_collector.codec.generate import generate

BARE = next(p for _, p in generate(1, encap=False))
ENCAP = next(p for _, p in generate(1, encap=True))
UDP6 = encode.ipv6("2001:db8::1", "2001:db8::2", 17, bytes(8))
TCP6 = encode.ipv6("2001:db8::1", "2001:db8::2", 6, bytes(20))
DEST_OPTS6 = encode.ipv6("2001:db8::1", "2001:db8::2", 60, bytes(8))
IPV4 = bytes.fromhex("450000140000000040110000c0000201c0000202")
ARP = bytes.fromhex("0001080006040001") + bytes(20)


def run_bpf(program: list[tuple[int, int, int, int]], frame: bytes) -> int:
    """Classic BPF as the kernel runs it (the opcodes tcpdump and DEFAULT_PROGRAM use); a load past the end drops."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        kind, size, mode = code & 0x07, code & 0x18, code & 0xE0
        if kind in (0x00, 0x01):  # LD, LDX
            width = {0x00: 4, 0x08: 2, 0x10: 1}[size]
            if mode == 0x00:  # IMM
                value = k
            elif mode in (0x20, 0x40):  # ABS, IND
                at = k + (x if mode == 0x40 else 0)
                if at + width > len(frame):
                    return 0
                value = int.from_bytes(frame[at : at + width], "big")
            elif mode == 0xA0 and kind == 0x01:  # LDX MSH: 4 * (frame[k] & 0xf)
                if k >= len(frame):
                    return 0
                value = (frame[k] & 0x0F) * 4
            else:
                raise NotImplementedError(hex(code))
            if kind == 0x00:
                a = value
            else:
                x = value
        elif kind == 0x05:  # JMP
            op, operand = code & 0xF0, x if code & 0x08 else k
            if op == 0x00:
                pc += k
                continue
            taken = {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand, 0x40: bool(a & operand)}[op]
            pc += jt if taken else jf
        elif kind == 0x06:  # RET
            return a if code & 0x18 == 0x10 else k
        elif kind == 0x04 and code & 0xF0 == 0x50:  # ALU AND K
            a &= k
        else:
            raise NotImplementedError(hex(code))


def eth(packet: bytes, vlans=(), ethertype=0x86DD) -> bytes:
    return encode.ethernet(packet, vlans=vlans, ethertype=ethertype)


Q, AD, OLD = 0x8100, 0x88A8, 0x9100
ACCEPTED = {
    "probe": eth(BARE),
    "encapsulated probe": eth(ENCAP),
    "802.1Q": eth(ENCAP, [(Q, 10)]),
    "802.1ad": eth(BARE, [(AD, 10)]),
    "0x9100": eth(ENCAP, [(OLD, 10)]),
    "QinQ": eth(ENCAP, [(AD, 100), (Q, 10)]),
    "0x9100 + 802.1Q": eth(BARE, [(OLD, 100), (Q, 10)]),
    "Q in Q": eth(ENCAP, [(Q, 100), (Q, 10)]),
    "short: just the next header": eth(BARE)[:21],
}
DROPPED = {
    "IPv6 UDP": eth(UDP6),
    "IPv6 TCP": eth(TCP6),
    "IPv6 destination options": eth(DEST_OPTS6),
    "802.1Q IPv6 UDP": eth(UDP6, [(Q, 10)]),
    "QinQ IPv6 UDP": eth(UDP6, [(AD, 100), (Q, 10)]),
    "IPv4": eth(IPV4, ethertype=0x0800),
    "802.1Q IPv4": eth(IPV4, [(Q, 10)], ethertype=0x0800),
    "ARP": eth(ARP, ethertype=0x0806),
    "three tags": eth(BARE, [(AD, 1), (Q, 2), (Q, 3)]),
    "short: IPv6 without a next header": eth(BARE)[:20],
    "short: a tag without its EtherType": eth(BARE, [(Q, 10)])[:17],
    "short: only MAC addresses": eth(BARE)[:12],
    "empty": b"",
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_default_program_accepts_whole_frames_that_can_be_probes(name):
    assert run_bpf(DEFAULT_PROGRAM, ACCEPTED[name]) == bpf.SNAPLEN


@pytest.mark.parametrize("name", DROPPED)
def test_default_program_drops_everything_else(name):
    assert run_bpf(DEFAULT_PROGRAM, DROPPED[name]) == 0


def test_default_program_jumps_stay_inside_and_every_path_returns():
    for pc, (code, jt, jf, _) in enumerate(DEFAULT_PROGRAM):
        if code & 0x07 == 0x05:
            assert pc + 1 + max(jt, jf) < len(DEFAULT_PROGRAM)
    assert DEFAULT_PROGRAM[-1][0] == bpf.RET_K


def test_compile_expression_gives_a_program_for_ip6_udp():
    program = compile_expression("ip6 and udp")
    assert run_bpf(program, eth(UDP6)) > 0
    assert run_bpf(program, eth(BARE)) == 0
    assert run_bpf(program, eth(IPV4, ethertype=0x0800)) == 0


def test_compile_expression_agrees_with_tcpdump_d():
    """-ddd decimal parsed equals -dd's C initializers, instruction by instruction."""
    text = subprocess.run(["tcpdump", "-dd", "-y", "EN10MB", "ip6 and tcp"], capture_output=True, text=True).stdout
    expected = [tuple(int(v, 16) for v in line.strip(" {},").split(",")) for line in text.splitlines() if line]
    assert compile_expression("ip6 and tcp") == expected


def test_a_bad_expression_raises_filter_error_in_one_line():
    with pytest.raises(FilterError, match=r"^bad capture filter 'ip6 and bogus': ") as caught:
        compile_expression("ip6 and bogus")
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_an_expression_is_never_taken_for_a_tcpdump_option():
    with pytest.raises(FilterError, match="bad capture filter"):
        compile_expression("-w /tmp/x")


def test_missing_tcpdump_is_a_one_line_filter_error(monkeypatch):
    monkeypatch.setattr(bpf.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(FilterError, match=r"^compiling a capture filter needs tcpdump \(apt-get install tcpdump\)$"):
        compile_expression("ip6")


def test_unknown_link_type():
    with pytest.raises(FilterError, match="link type 9999"):
        compile_expression("ip6", linktype=9999)


def test_parse_ddd_rejects_a_count_that_does_not_match():
    assert parse_ddd("1\n6 0 0 262144\n") == [(6, 0, 0, 262144)]
    with pytest.raises(FilterError):
        parse_ddd("2\n6 0 0 262144\n")
    with pytest.raises(FilterError):
        parse_ddd("1\n6 0 0\n")


def test_attach_filter_checks_the_program_and_reports_the_kernels_refusal():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        attach_filter(sock, DEFAULT_PROGRAM)  # any socket takes a classic filter: no privilege needed
        with pytest.raises(FilterError, match="1 to 4096 instructions"):
            attach_filter(sock, [])
        with pytest.raises(FilterError, match="out of range"):
            attach_filter(sock, [(bpf.RET_K, 0, 300, 0)])
        with pytest.raises(FilterError, match=r"^the kernel rejected the capture filter: Invalid argument$"):
            attach_filter(sock, [(bpf.JEQ_K, 5, 0, 1), (bpf.RET_K, 0, 0, 0)])  # jumps past the end
