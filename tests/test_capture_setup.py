"""What an operator sees when capturing cannot start: one line, naming the interface and the cause."""

from __future__ import annotations

import mmap
import random
import socket
import subprocess
import sys

import pytest

from pt_collector.capture import CaptureSetupError, RingReceiver, SocketReceiver, open_packet_socket
from pt_collector.capture.bpf import RET_K

OPENERS = {"open_packet_socket": open_packet_socket, "ring": RingReceiver, "socket": SocketReceiver}


@pytest.fixture(params=OPENERS)
def opener(request):
    return OPENERS[request.param]


def expect_setup_error(message: str, call, *args, **kwargs) -> None:
    with pytest.raises(CaptureSetupError) as caught:
        call(*args, **kwargs)
    assert str(caught.value) == message


@pytest.mark.parametrize("name", ["ptcnosuch0", "a-name-longer-than-ifnamsiz", "../lo"])
def test_a_missing_interface(opener, name):
    expect_setup_error(f"no interface named {name}", opener, name)


def test_an_interface_that_is_down(veth, opener):
    veth.set_rx_up(False)
    expect_setup_error(f"interface {veth.rx_iface} is down", opener, veth.rx_iface)


def test_an_interface_without_carrier(veth, opener):
    veth.set_tx_up(False)  # the far end down: ours is up but has no link
    veth.wait_carrier(False)
    expect_setup_error(f"interface {veth.rx_iface} is up but has no link (no carrier)", opener, veth.rx_iface)


def test_without_cap_net_raw():
    """In a child process without CAP_NET_RAW: still root (so it can read a checkout that only root may enter,
    as a private temporary clone is) but with the capability gone from its bounding set."""
    code = (
        "from pt_collector.capture import CaptureSetupError, RingReceiver\n"
        "try:\n    RingReceiver('lo')\nexcept CaptureSetupError as e:\n    print(e)\n"
    )
    done = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-net_raw",
            "--inh-caps=-net_raw",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == "capturing on lo needs CAP_NET_RAW (run as root or grant the capability)\n"


def test_a_program_the_kernel_rejects(opener):
    jumps_past_the_end = [(0x15, 5, 0, 1), (RET_K, 0, 0, 0)]
    expect_setup_error(
        "capture on lo: the kernel rejected the capture filter: Invalid argument",
        opener,
        "lo",
        program=jumps_past_the_end,
    )


def test_a_fanout_group_taken_on_another_interface(veth):
    group = random.randrange(1, 0xFFFF)
    with RingReceiver(veth.rx_iface, fanout_group=group):
        expect_setup_error(
            f"cannot join fanout group {group} on lo: Invalid argument"
            " (is the group used by another interface, mode or ring setting?)",
            open_packet_socket,
            "lo",
            fanout_group=group,
        )


def test_a_ring_with_blocks_the_kernel_cannot_use():
    unit = max(mmap.PAGESIZE, 2048)
    message = f"ring blocks must be a positive multiple of {unit} bytes, and at least one"
    expect_setup_error(message, RingReceiver, "lo", block_size=1000)


def test_a_ring_larger_than_the_kernel_gives():
    expect_setup_error(
        "cannot set up a 1 x 4294963200 bytes capture ring on lo: Invalid argument",
        RingReceiver,
        "lo",
        block_size=(1 << 32) - 4096,
        block_count=1,
    )


def test_rcvbuf_beyond_rmem_max_is_forced():
    """SO_RCVBUFFORCE as root; the kernel reports twice the size asked for (its bookkeeping overhead)."""
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem_max = int(f.read())
    with open_packet_socket("lo", rcvbuf=rmem_max * 2) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == rmem_max * 4


GIB = 1 << 30


@pytest.mark.parametrize(
    ("size", "count", "rings", "mtu", "problem"),
    [
        (1 << 20, 64, 1, 1500, None),
        (1 << 20, 8192, 1, 1500, None),  # 8 GiB of a 24 GiB machine, 9 GiB of it available
        (1 << 20, 100_000, 1, 1500, "97.7 GiB of capture ring: more than 50% of the memory (24.0 GiB MemTotal)"),
        (1 << 20, 4000, 4, 1500, "3.9 GiB of capture ring each, x 4 workers: more than 50% of the memory"),
        (1 << 20, 10_000, 1, 1500, "more than the memory available now (9.0 GiB MemAvailable)"),
        (1 << 20, 100_000_000, 1, 1500, "--ring-blocks 100000000: must be from 1 to 262,144"),
        (3 << 20, 64, 1, 1500, "--ring-block-size 3145728: must be a power of two from"),
        (1 << 31, 1, 1, 1500, "to 1073741824 (the kernel's largest block)"),
        (1024, 64, 1, 1500, "--ring-block-size 1024: must be a power of two"),
        (4096, 64, 1, 9000, "a block must hold the largest frame (MTU 9000 + 256)"),
        (16384, 64, 1, 9000, None),
    ],
)
def test_ring_geometry_limits(size, count, rings, mtu, problem):
    from pt_collector.capture.ring import ring_geometry_problem

    found = ring_geometry_problem(size, count, rings=rings, memory=(24 * GIB, 9 * GIB), mtu=mtu)
    assert found == problem if problem is None else problem in found


def test_32_bit_ring_counts_are_an_error_not_a_traceback():
    expect_setup_error(
        "a 100000000 x 1048576 bytes capture ring is beyond the kernel's 32-bit counts",
        RingReceiver,
        "lo",
        block_size=1 << 20,
        block_count=100_000_000,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--ring-blocks", "100000", "--ring-block-size", "1048576"], "= 97.7 GiB of capture ring: more than 50% of"),
        (["--ring-blocks", "100000000"], "--ring-blocks 100000000: must be from 1 to 262,144"),
        (["--ring-block-size", "3000000"], "--ring-block-size 3000000: must be a power of two"),
        (["--workers", "64", "--ring-blocks", "1024"], "each, x 64 workers: more than 50% of the memory ("),
    ],
)
def test_ptc_collect_refuses_a_ring_too_large_before_asking_the_kernel(veth, tmp_path, args, says):
    """Through the command line: exit status 2 (usage), the limit named on the Error line, no ring set up."""
    command = [sys.executable, "-m", "pt_collector.cli.main", "collect", "--iface", veth.rx_iface]
    done = subprocess.run(
        [*command, "--output", str(tmp_path / "out.jsonl"), *args], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and says in errors[0], done.stderr
    assert "Traceback" not in done.stderr
