"""The metrics endpoint of a real `ptc collect`: slow clients block nobody, 127.0.0.1 by default, GET/HEAD only."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path

from test_collect_veth import Collector
from test_operations import free_port, get

from pt_collector.ops.metrics import CONNECTION_DEADLINE_S
from pt_collector.pipeline.engine import engine_name


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as in /proc/net/tcp) of the sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # TCP_LISTEN
                found.add(address)
    return found


def idle(port: int, payload: bytes = b"") -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    if payload:
        conn.sendall(payload)
    return conn


def ended_by_server(conn: socket.socket) -> bool:
    """Whether the server ends `conn` (EOF or reset) before the socket's own timeout."""
    try:
        while conn.recv(4096):  # whatever it answers (400 to a request cut short), then the end
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_idle_and_slowloris_clients_block_neither_healthz_nor_metrics(veth, tmp_path):
    port = free_port()
    collector = Collector(
        "--iface", veth.rx_iface, "--output", str(tmp_path / "out.jsonl"), "--metrics-port", str(port)
    )
    try:
        collector.wait_for(lambda line: "kernel" in line)
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 by default, nothing else
        idlers = [idle(port) for _ in range(20)]
        slowloris = idle(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        partial = idle(port, b"GE")
        started = time.monotonic()
        for _ in range(3):
            slowloris.sendall(b"X-a: b\r\n")  # trickling keeps a per-read timeout from ever firing
            assert get(f"http://127.0.0.1:{port}/healthz") == (200, "capturing\n")
            status, text = get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200 and "ptc_capturing 1.0" in text
            assert f'ptc_engine_info{{engine="{engine_name()}"}} 1.0' in text
            time.sleep(0.5)
        # and the server ends them all, the trickling one too, once their deadline is past
        for conn in [*idlers, slowloris, partial]:
            conn.settimeout(max(1.0, CONNECTION_DEADLINE_S + 5 - (time.monotonic() - started)))
            assert ended_by_server(conn)
            conn.close()
    finally:
        assert collector.stop() == 0


def test_only_get_and_head(veth, tmp_path):
    port = free_port()
    collector = Collector(
        "--iface", veth.rx_iface, "--output", str(tmp_path / "out.jsonl"), "--metrics-port", str(port)
    )
    try:
        collector.wait_for(lambda line: "kernel" in line)
        for method in ("POST", "PUT", "DELETE"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request(method, "/healthz", body=b"x")
            answer = conn.getresponse()
            assert (answer.status, answer.getheader("Allow")) == (405, "GET, HEAD")
            conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("HEAD", "/healthz")
        answer = conn.getresponse()
        assert (answer.status, answer.getheader("Content-Length"), answer.read()) == (200, "10", b"")
    finally:
        assert collector.stop() == 0


def test_the_metrics_address_is_chosen_with_metrics_address(veth, tmp_path):
    port = free_port()
    out = str(tmp_path / "out.jsonl")
    collector = Collector("--iface", veth.rx_iface, "--output", out, "--metrics-port", str(port),
                          "--metrics-address", "0.0.0.0")  # fmt: skip
    try:
        collector.wait_for(lambda line: "kernel" in line)
        assert listening_addresses(port) == {"00000000"}
    finally:
        assert collector.stop() == 0
