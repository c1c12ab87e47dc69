"""Probes into per-path window aggregates, and closed windows into path histogram records (pure).

A window is [k * width, (k + 1) * width) of the probe's source time
(path_histogram.probe_time), keyed by the probe's source: every path and
session of a source lives in one Kafka key, so one source's windows are
whole in one partition. A window aggregate is a JSON-able dict, mergeable
in any order (Quix Streams' reduce keeps it in RocksDB):

    {"paths": {path id: {"n": probes, "e2e": sketch, "hops": [sketch, ...]}},
     "sessions": {session id: {"ref": seq, "lo": off, "hi": off, "n": probes, "paths": {path id: probes}}}}

Loss per (source, session) with the 16-bit wrap: a window's sequence numbers
are unwrapped around the first one seen (offsets within half the sequence
space), so their order does not matter; the missing ones are the span's
minus the probes, plus the gap after the session's previous window (its
last sequence number, kept by the caller). A session's loss is charged to
the path that carried most of its probes in the window.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from ..codec.record import HISTOGRAM_SCHEMA_VERSION, DelayHistogram, PathHistogram, PathNode, Record
from ..pipeline.path_histogram import PathKey, path_key, probe_time
from . import sketch

SEQUENCE_MOD = 1 << 16
HALF = SEQUENCE_MOD // 2
NS_PER_MS = 1_000_000
RULE = "analyze"
PERMILLE = tuple(round(q * 1000) for q in sketch.QUANTILES)
ACCURACY_PPM = round(sketch.RELATIVE_ACCURACY * 1_000_000)

Aggregate = dict[str, Any]
PathRead = tuple[int, DelayHistogram, tuple[DelayHistogram, ...]]  # probes, end-to-end delays, each hop's


class Window(NamedTuple):
    """A closed window read out (whichever engine aggregated it): its paths, and its sessions as in an Aggregate."""

    paths: dict[str, PathRead]
    sessions: dict[str, dict]


def path_id(key: PathKey) -> str:
    """A path within its source, as text (a JSON key): sink address, then the midpoints' interface ids."""
    return f"{key[1] or ''}|{','.join(map(str, key[2]))}"


def path_of(src: str, pid: str) -> PathKey:
    sink, _, ifs = pid.partition("|")
    return src, sink or None, tuple(int(i) for i in ifs.split(",") if i)


def signed(step: int) -> int:
    """A sequence-number difference mod 2**16 as the nearest signed step."""
    step %= SEQUENCE_MOD
    return step - SEQUENCE_MOD if step >= HALF else step


def aggregates(records: Iterable[Record], width_ms: int) -> list[tuple[int, Aggregate]]:
    """The records (of one source) as (latest probe time in ms, aggregate) per window, in window order.

    The latest probe time lies in the window: as the item's event time it
    puts the aggregate in its window, and moves the source's clock as its
    probes would.
    """
    raw: dict[int, dict] = {}
    latest: dict[int, int] = {}
    for record in records:
        ms = probe_time(record) // NS_PER_MS
        start = ms - ms % width_ms
        latest[start] = max(ms, latest.get(start, ms))
        window = raw.setdefault(start, {"paths": {}, "sessions": {}})
        pid = path_id(path_key(record))
        path = window["paths"].setdefault(pid, {"n": 0, "e2e": [], "hops": [[] for _ in range(len(record.hops) + 1)]})
        path["n"] += 1
        if record.e2e_ns is not None:
            path["e2e"].append(record.e2e_ns)
            _hop_delays(record, path["hops"])
        _sequence(window["sessions"], record.session_id, record.sequence, pid)
    return [(latest[start], _frozen(raw[start])) for start in sorted(raw)]


def _hop_delays(record: Record, hops: list[list[int]]) -> None:
    """Each hop's delay between neighbours whose times are both known (as path_histogram does)."""
    previous = record.src.time_ns
    for delays, hop in zip(hops, record.hops, strict=False):
        if hop.time_ns is not None and previous is not None:
            delays.append(hop.time_ns - previous)
        previous = hop.time_ns
    if previous is not None and record.sink is not None:
        hops[-1].append(record.sink.time_ns - previous)


def _sequence(sessions: dict, session_id: int, sequence: int, pid: str) -> None:
    session = sessions.get(str(session_id))
    if session is None:
        sessions[str(session_id)] = {"ref": sequence, "lo": 0, "hi": 0, "n": 1, "paths": {pid: 1}}
        return
    offset = signed(sequence - session["ref"])
    session["lo"] = min(session["lo"], offset)
    session["hi"] = max(session["hi"], offset)
    session["n"] += 1
    session["paths"][pid] = session["paths"].get(pid, 0) + 1


def _frozen(window: dict) -> Aggregate:
    paths = {
        pid: {"n": p["n"], "e2e": sketch.of(p["e2e"]), "hops": [sketch.of(h) for h in p["hops"]]}
        for pid, p in window["paths"].items()
    }
    return {"paths": paths, "sessions": window["sessions"]}


def merge(a: Aggregate, b: Aggregate) -> Aggregate:
    """Two aggregates of one source and window in one (any order gives the same)."""
    paths = dict(a["paths"])
    for pid, p in b["paths"].items():
        q = paths.get(pid)
        paths[pid] = p if q is None else _merge_path(q, p)
    sessions = dict(a["sessions"])
    for sid, s in b["sessions"].items():
        t = sessions.get(sid)
        sessions[sid] = s if t is None else _merge_session(t, s)
    return {"paths": paths, "sessions": sessions}


def _merge_path(a: dict, b: dict) -> dict:
    hops = [sketch.merge(x, y) for x, y in zip(a["hops"], b["hops"], strict=True)]
    return {"n": a["n"] + b["n"], "e2e": sketch.merge(a["e2e"], b["e2e"]), "hops": hops}


def _merge_session(a: dict, b: dict) -> dict:
    delta = signed(b["ref"] - a["ref"])
    paths = dict(a["paths"])
    for pid, n in b["paths"].items():
        paths[pid] = paths.get(pid, 0) + n
    return {
        "ref": a["ref"], "lo": min(a["lo"], b["lo"] + delta), "hi": max(a["hi"], b["hi"] + delta),
        "n": a["n"] + b["n"], "paths": paths,
    }  # fmt: skip


def session_loss(session: dict, previous_last: int | None) -> tuple[int, int]:
    """(probes missing in and just before this window, the window's last sequence number)."""
    first = (session["ref"] + session["lo"]) % SEQUENCE_MOD
    last = (session["ref"] + session["hi"]) % SEQUENCE_MOD
    missing = max(0, session["hi"] - session["lo"] + 1 - session["n"])  # repeats make it an underestimate
    if previous_last is not None:
        step = signed(first - previous_last)
        missing += max(0, step - 1)
    return missing, last


def read(aggregate: Aggregate) -> Window:
    """A closed window's aggregate: per path its probes and delays (with their quantiles), and its sessions."""
    paths = {pid: (p["n"], _delays(p["e2e"]), tuple(map(_delays, p["hops"]))) for pid, p in aggregate["paths"].items()}
    return Window(paths, aggregate["sessions"])


def losses(sessions: dict[str, dict], last_seen: dict[str, int]) -> dict[str, int]:
    """Loss per path id; updates `last_seen` (session id -> last sequence number) for the next window."""
    out: dict[str, int] = {}
    for sid, session in sessions.items():
        missing, last_seen[sid] = session_loss(session, last_seen.get(sid))
        if missing:
            pid = min(session["paths"].items(), key=lambda item: (-item[1], item[0]))[0]
            out[pid] = out.get(pid, 0) + missing
    return out


def histograms(src: str, start_ms: int, width_ms: int, paths: dict[str, PathRead], loss: dict[str, int]) -> list:
    """A closed window's paths (Window.paths) as one PathHistogram per path (sorted by path id)."""
    return [_histogram(path_of(src, pid), start_ms, width_ms, paths[pid], loss.get(pid, 0)) for pid in sorted(paths)]


def _histogram(key: PathKey, start_ms: int, width_ms: int, path: PathRead, loss: int) -> PathHistogram:
    src, sink, hop_if_ids = key
    count, e2e, hops = path
    return PathHistogram(
        HISTOGRAM_SCHEMA_VERSION, RULE, start_ms * NS_PER_MS, width_ms * NS_PER_MS, PathNode(src),
        PathNode(sink) if sink is not None else None, hop_if_ids, count, loss, (), e2e, (), hops, PERMILLE,
        ACCURACY_PPM,
    )  # fmt: skip


def _delays(state: sketch.State) -> DelayHistogram:
    n = state["n"]
    return DelayHistogram(n, state["min"], state["max"], int(state["sum"]), (n,), sketch.quantiles(state))
