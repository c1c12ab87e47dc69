"""Classic BPF capture filters: the built-in PT filter, tcpdump expressions, attaching.

A program is a list of (code, jt, jf, k) instructions, as `tcpdump -ddd`
prints them and as `struct sock_filter` holds them. The kernel runs it on
every frame before the frame is queued to the socket, so whatever it drops
costs no copy to user space and no Python work.

The program sees the frame as the packet socket will deliver it: the
receive path has already moved the outer 802.1Q / 802.1ad tag into packet
metadata, so a singly tagged frame looks untagged here; a second tag, and
tags with other TPIDs (0x9100), stay in the data.
"""

from __future__ import annotations

import ctypes
import shutil
import socket
import struct
import subprocess

Program = list[tuple[int, int, int, int]]

SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>
BPF_MAXINSNS = 4096
SNAPLEN = 262144  # what an accepting program returns: the whole frame, as tcpdump's default
TCPDUMP_TIMEOUT_S = 10

# BPF opcodes used below (<linux/filter.h>): class | size | mode, class | op | source
LD_H_ABS = 0x28  # A = halfword at [k]
LD_B_IND = 0x50  # A = byte at [X + k]
LDX_IMM = 0x01  # X = k
JEQ_K = 0x15  # A == k ? jt : jf (relative to the next instruction)
RET_K = 0x06  # accept k bytes (0 drops)

# IPv6 frames whose next header is Hop-by-Hop (a probe) or Routing (an
# encapsulated probe), untagged or behind one or two VLAN tags in the data.
# X holds the bytes of tags seen so far; the next header byte is at [X + 20].
DEFAULT_PROGRAM: Program = [
    (LDX_IMM, 0, 0, 0),  # 0: X = 0 (no tag)
    (LD_H_ABS, 0, 0, 12),  # 1: A = EtherType / outer TPID
    (JEQ_K, 12, 0, 0x86DD),  # 2: IPv6 -> 15
    (JEQ_K, 2, 0, 0x8100),  # 3: 802.1Q -> 6
    (JEQ_K, 1, 0, 0x88A8),  # 4: 802.1ad -> 6
    (JEQ_K, 0, 13, 0x9100),  # 5: old QinQ -> 6, else drop
    (LDX_IMM, 0, 0, 4),  # 6: X = 4 (one tag)
    (LD_H_ABS, 0, 0, 16),  # 7: A = EtherType / inner TPID
    (JEQ_K, 6, 0, 0x86DD),  # 8: IPv6 -> 15
    (JEQ_K, 2, 0, 0x8100),  # 9: 802.1Q -> 12
    (JEQ_K, 1, 0, 0x88A8),  # 10: 802.1ad -> 12
    (JEQ_K, 0, 7, 0x9100),  # 11: old QinQ -> 12, else drop
    (LDX_IMM, 0, 0, 8),  # 12: X = 8 (two tags)
    (LD_H_ABS, 0, 0, 20),  # 13: A = EtherType
    (JEQ_K, 0, 4, 0x86DD),  # 14: IPv6 -> 15, else drop
    (LD_B_IND, 0, 0, 20),  # 15: A = IPv6 next header (a short frame drops here)
    (JEQ_K, 1, 0, 0),  # 16: Hop-by-Hop -> accept
    (JEQ_K, 0, 1, 43),  # 17: Routing -> accept, else drop
    (RET_K, 0, 0, SNAPLEN),  # 18: accept the whole frame
    (RET_K, 0, 0, 0),  # 19: drop
]

# tcpdump -y takes a DLT name; the pcap LINKTYPE values a packet socket can deliver
DLT_NAMES = {1: "EN10MB", 101: "RAW", 113: "LINUX_SLL", 228: "IPV4", 229: "IPV6", 276: "LINUX_SLL2"}

INSTRUCTION = struct.Struct("HBBI")  # struct sock_filter, native order
FPROG = struct.Struct("HP")  # struct sock_fprog: instruction count, pointer to the instructions


class FilterError(ValueError):
    """A capture filter that cannot be compiled or attached (one-line message)."""


def compile_expression(expr: str, linktype: int = 1) -> Program:
    """A pcap filter expression as a classic BPF program, compiled by tcpdump.

    tcpdump compiles for a capture file here, not a live socket, so `vlan`
    tests tags in the frame data; on a live socket the outer tag is already
    in metadata (see the module docstring) and `vlan` does not match it.
    """
    dlt = DLT_NAMES.get(linktype)
    if dlt is None:
        raise FilterError(f"cannot compile filters for link type {linktype}")
    tcpdump = shutil.which("tcpdump") or shutil.which("tcpdump", path="/usr/sbin:/sbin")
    if tcpdump is None:
        raise FilterError("compiling a capture filter needs tcpdump (apt-get install tcpdump)")
    try:
        done = subprocess.run(
            [tcpdump, "-ddd", "-y", dlt, "--", expr],
            capture_output=True,
            text=True,
            timeout=TCPDUMP_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FilterError(f"running tcpdump to compile the capture filter failed: {e}") from None
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["tcpdump failed"])[-1].removeprefix("tcpdump: ")
        raise FilterError(f"bad capture filter {expr!r}: {reason}")
    return parse_ddd(done.stdout)


def parse_ddd(text: str) -> Program:
    """`tcpdump -ddd` output (a count, then one "code jt jf k" line per instruction) as a program."""
    try:
        count, *lines = (line for line in text.split("\n") if line.strip())
        program = [_instruction(line) for line in lines]
    except ValueError:
        raise FilterError(f"unexpected tcpdump -ddd output: {text[:80]!r}") from None
    if int(count) != len(program) or not 0 < len(program) <= BPF_MAXINSNS:
        raise FilterError(f"tcpdump -ddd announced {count.strip()} instructions and printed {len(program)}")
    return program


def _instruction(line: str) -> tuple[int, int, int, int]:
    code, jt, jf, k = (int(field) for field in line.split())
    return code, jt, jf, k


def attach_filter(sock: socket.socket, program: Program) -> None:
    """Attach `program` with SO_ATTACH_FILTER; the kernel copies it, so the buffer may go after."""
    if not 0 < len(program) <= BPF_MAXINSNS:
        raise FilterError(f"a capture filter has 1 to {BPF_MAXINSNS} instructions, not {len(program)}")
    try:
        code = b"".join(INSTRUCTION.pack(*insn) for insn in program)
    except struct.error as e:
        raise FilterError(f"capture filter instruction out of range: {e}") from None
    buffer = ctypes.create_string_buffer(code, len(code))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, FPROG.pack(len(program), ctypes.addressof(buffer)))
    except OSError as e:
        raise FilterError(f"the kernel rejected the capture filter: {e.strerror}") from None
