"""Both receivers over a real veth pair: probes arrive once and whole, noise never, counters agree."""

from __future__ import annotations

import random
import select
import time
from collections import Counter

import pytest
from netns import mark, marker, receive, receive_many, wait_readable

from pt_collector.capture import CaptureSetupError, RingReceiver, SocketReceiver, compile_expression, kernel_stats
from pt_collector.codec import encode
from pt_collector.codec.generate import generate

RECEIVERS = {"ring": RingReceiver, "socket": SocketReceiver}
Q, AD, OLD = 0x8100, 0x88A8, 0x9100
# what the kernel does to tags on the way to a packet socket: the outer 802.1Q / 802.1ad
# tag moves into metadata, so the frame arrives 4 bytes shorter; 0x9100 is no VLAN to it
TAGS = [(), (), (), ((Q, 10),), ((AD, 100), (Q, 10)), ((OLD, 100), (Q, 10))]
UDP6 = encode.ipv6("2001:db8::1", "2001:db8::2", 17, bytes(16))
IPV4 = bytes.fromhex("450000140000000040110000c0000201c0000202")
NOISE = [
    encode.ethernet(UDP6),
    encode.ethernet(UDP6, vlans=[(Q, 10)]),
    encode.ethernet(IPV4, ethertype=0x0800),
    encode.ethernet(IPV4, vlans=[(Q, 10)], ethertype=0x0800),
    encode.ethernet(bytes.fromhex("0001080006040001") + bytes(20), ethertype=0x0806),  # ARP
    encode.ethernet(encode.ipv6("2001:db8::1", "2001:db8::2", 58, bytes(8))),  # ICMPv6
]


@pytest.fixture(params=RECEIVERS)
def make(request):
    return RECEIVERS[request.param]


def as_received(frame: bytes) -> bytes:
    """The frame as a packet socket delivers it: without an outer 802.1Q / 802.1ad tag."""
    return frame[:12] + frame[16:] if int.from_bytes(frame[12:14], "big") in (Q, AD) else frame


def traffic(probes: int, seed: int = 7, sources: int = 4) -> tuple[list[bytes], dict[int, bytes]]:
    """Marked probe frames (some tagged) with noise in between, a probe last; and the probes as they arrive."""
    rng = random.Random(seed)
    frames, expected = [], {}
    for i, (_, packet) in enumerate(generate(probes, sources=sources, encap=bool(seed % 2), seed=seed)):
        if i and rng.random() < 0.3:
            frames.append(mark(rng.choice(NOISE), 100_000 + len(frames)))
        frame = mark(encode.ethernet(packet, vlans=TAGS[i % len(TAGS)]), i)
        frames.append(frame)
        expected[i] = as_received(frame)
    return frames, expected


def assert_exactly(got: list[tuple[int, bytes]], expected: dict[int, bytes]) -> None:
    counts = Counter(marker(frame) for _, frame in got)
    assert {n for n, c in counts.items() if c > 1} == set(), "duplicates"
    assert set(counts) - set(expected) == set(), "frames that should have been filtered"
    assert set(expected) - set(counts) == set(), "missing frames"
    assert all(frame == expected[marker(frame)] for _, frame in got)


def test_probes_arrive_once_and_whole_noise_never(veth, make):
    frames, expected = traffic(60)
    with make(veth.rx_iface) as receiver:
        before = time.time_ns()
        veth.send(frames)
        got = receive(receiver, len(expected))
        got += receive(receiver, 1, timeout_s=0.05)  # anything beyond: duplicates, noise
        after = time.time_ns()
        assert kernel_stats(receiver.sock) == (len(expected), 0)
        assert kernel_stats(receiver.sock) == (0, 0)  # reading resets the counters
    assert_exactly(got, expected)
    assert all(before <= ns <= after for ns, _ in got)


def test_tagged_probes_keep_their_ipv6_packet_and_lose_only_the_outer_tag(veth, make):
    packet = next(generate(1))[1]
    sent = [encode.ethernet(packet, vlans=tags) for tags in TAGS[2:]]
    with make(veth.rx_iface) as receiver:
        veth.send([mark(frame, n) for n, frame in enumerate(sent)])
        got = sorted(receive(receiver, len(sent)), key=lambda item: marker(item[1]))
    heads = [frame[12:14].hex() + " " + str(len(frame) - len(packet)) for _, frame in got]
    assert heads == ["86dd 14", "86dd 14", "8100 18", "9100 22"]  # untagged, 802.1Q, QinQ, 0x9100 + 802.1Q
    assert all(frame.endswith(packet) for _, frame in got)


def test_drain_stops_at_the_limit_and_resumes_where_it_stopped(veth, make):
    frames, expected = traffic(50, seed=8)
    with make(veth.rx_iface) as receiver:
        veth.send(frames)
        got, sizes = [], []
        deadline = time.monotonic() + 3
        while len(got) < len(expected) and time.monotonic() < deadline:
            sizes.append(receiver.drain(got, 7))
            if not sizes[-1]:
                wait_readable(receiver, 0.5)
        got += receive(receiver, 1, timeout_s=0.05)
    assert max(sizes) == 7
    assert sizes.count(7) >= len(expected) // 7 - 1
    assert_exactly(got, expected)


def test_the_kernel_counts_what_a_full_buffer_drops(veth, make):
    frames, expected = traffic(300, seed=9)
    small = {"block_size": 8192, "block_count": 2} if make is RingReceiver else {"rcvbuf": 4096}
    with make(veth.rx_iface, **small) as receiver:
        veth.send(frames)
        got = receive(receiver, len(expected), timeout_s=0.3)
        packets, drops = kernel_stats(receiver.sock)
    assert packets == len(expected)
    assert 0 < drops < packets
    assert len(got) == packets - drops
    assert all(frame == expected[marker(frame)] for _, frame in got)


def test_readable_when_frames_wait_and_not_after_a_full_drain(veth, make):
    with make(veth.rx_iface) as receiver:
        poller = select.poll()
        poller.register(receiver.fileno(), select.POLLIN)
        assert poller.poll(0) == []
        veth.send([encode.ethernet(next(generate(1))[1])])
        assert poller.poll(1000) == [(receiver.fileno(), select.POLLIN)]
        assert receiver.drain([], 10) == 1
        assert poller.poll(0) == []


def test_two_sockets_in_a_fanout_group_share_the_frames_flow_by_flow(veth, make):
    frames, expected = traffic(128, seed=11, sources=32)
    group = random.randrange(1, 0xFFFF)
    with make(veth.rx_iface, fanout_group=group) as first, make(veth.rx_iface, fanout_group=group) as second:
        veth.send(frames)
        got = receive_many([first, second], len(expected))
        for more, side in zip(receive_many([first, second], 1, timeout_s=0.05), got, strict=True):
            side += more
    assert_exactly(got[0] + got[1], expected)
    assert got[0] and got[1]
    flows = [{frame[14 + 8 : 14 + 24] for _, frame in side} for side in got]  # outer source addresses
    assert flows[0].isdisjoint(flows[1])


def test_a_compiled_expression_filters_in_the_kernel(veth, make):
    udp = mark(encode.ethernet(UDP6), 1)
    probe = mark(encode.ethernet(next(generate(1))[1]), 2)
    with make(veth.rx_iface, program=compile_expression("ip6 and udp")) as receiver:
        veth.send([probe, mark(NOISE[2], 3), udp])
        got = receive(receiver, 1)
        got += receive(receiver, 1, timeout_s=0.05)
    assert [frame for _, frame in got] == [udp]


def test_without_a_program_every_frame_arrives(veth, make):
    frames, _ = traffic(20, seed=12)
    with make(veth.rx_iface, program=None) as receiver:
        veth.send(frames)
        got = receive(receiver, len(frames))
    assert sorted(marker(frame) for _, frame in got) == sorted(marker(frame) for frame in frames)


def test_a_link_flap_does_not_end_the_capture(veth, make):
    frames, expected = traffic(20, seed=13)
    with make(veth.rx_iface) as receiver:
        poller = select.poll()
        poller.register(receiver.fileno(), select.POLLIN)
        veth.set_rx_up(False)
        assert poller.poll(1000)  # the kernel reports ENETDOWN
        assert receiver.drain([], 10) == 0
        assert poller.poll(0) == []  # reported once, not a busy loop
        veth.set_rx_up(True)
        veth.wait_carrier(True)
        veth.send(frames)
        got = receive(receiver, len(expected))
    assert_exactly(got, expected)


def test_a_deleted_interface_is_reported(veth, make):
    with make(veth.rx_iface) as receiver:
        receiver.check_interface()
        veth.delete_rx()
        with pytest.raises(CaptureSetupError, match=f"^interface {veth.rx_iface} went away$"):
            receive(receiver, 1, timeout_s=0.2)
            receiver.check_interface()


def test_ring_frames_carry_the_kernels_receive_time_and_send_paces(veth):
    frames = [mark(encode.ethernet(packet), n) for n, (_, packet) in enumerate(generate(11))]
    with RingReceiver(veth.rx_iface) as receiver:
        veth.send(frames, rate_pps=100)
        got = receive(receiver, len(frames))
    times = [ns for ns, _ in got]
    assert times == sorted(times)
    assert 0.09e9 < times[-1] - times[0] < 0.2e9  # 10 gaps of 10 ms


def test_stop_receiving_takes_no_more_and_unread_counts_the_block_being_filled(veth):
    """A ring with a long block timeout: what was sent sits in the block the kernel fills, unread but counted
    (`unread`); after stop_receiving nothing more is taken or counted, and the block comes within the time said."""
    first, expected = traffic(50, seed=13)
    later, _ = traffic(40, seed=15)
    # the kernel's block timer does not start at the first frame: a long timeout, so that the frames are still in the
    # block when the sender (a process started in the namespace, slow on a busy machine) is done
    with RingReceiver(veth.rx_iface, block_timeout_ms=1000) as receiver:
        veth.send(first)
        packets, drops = kernel_stats(receiver.sock)
        assert (packets, drops) == (len(expected), 0)
        got: list[tuple[int, bytes]] = []
        receiver.drain(got, 1 << 30)
        assert got == [] and receiver.unread() == len(expected)  # in the kernel's current block
        settle_s = receiver.stop_receiving()
        veth.send(later)
        assert kernel_stats(receiver.sock) == (0, 0)  # taken by nobody, counted by nobody
        deadline = time.monotonic() + settle_s
        while receiver.unread() and time.monotonic() < deadline:
            receiver.drain(got, 1 << 30)
            time.sleep(0.005)
        receiver.drain(got, 1 << 30)
        assert receiver.unread() == 0
    assert_exactly(got, expected)


def test_unread_counts_handed_over_blocks_and_the_rest_of_the_block_in_hand(veth):
    frames, expected = traffic(200, seed=17)
    with RingReceiver(veth.rx_iface, block_size=8192, block_count=64, block_timeout_ms=1) as receiver:
        veth.send(frames)
        time.sleep(0.05)  # every block handed over
        assert receiver.unread() == len(expected)
        got: list[tuple[int, bytes]] = []
        receiver.drain(got, 3)  # stops in the first block
        assert receiver.unread() == len(expected) - 3
        receiver.drain(got, 1 << 30)
        assert receiver.unread() == 0
    assert_exactly(got, expected)


@pytest.mark.parametrize("take", [3, 40, 200])
def test_a_process_forked_after_the_ring_reads_on_where_a_killed_one_stopped(veth, take):
    """A reader killed (SIGKILL) after `take` frames, mid-block or past whole blocks: the next reader, in
    another process, resumes from the shared read position: every frame once, across the two."""
    import os
    import signal

    frames, expected = traffic(200, seed=19)
    with RingReceiver(veth.rx_iface, block_size=8192, block_count=64, block_timeout_ms=1) as receiver:
        veth.send(frames)
        time.sleep(0.05)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the first reader: reads `take` frames, says which, and dies without a word more
            got: list[tuple[int, bytes]] = []
            while len(got) < take:
                receiver.drain(got, take - len(got))
            os.write(write, b",".join(str(marker(frame)).encode() for _, frame in got))
            os.kill(os.getpid(), signal.SIGKILL)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status)
        first = [int(n) for n in os.read(read, 1 << 20).split(b",")]
        os.close(read)
        assert receiver.taken == take
        receiver.resume()
        rest = receive(receiver, len(expected) - take)
    assert sorted(first + [marker(frame) for _, frame in rest]) == sorted(expected)
