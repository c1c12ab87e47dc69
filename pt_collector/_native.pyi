"""ptc's compiled engine (native/, Rust): frames in, records out already encoded, never a Python object per probe.

The twin of the pure-Python engine (decode.py, tts.py, record.py, pcap.py); tests/test_native.py holds the two
byte-equal. Optional: a build without a Rust toolchain has no `_native`, and ptc runs on the pure engine.
"""

from collections.abc import Buffer, Iterable, Mapping
from ipaddress import IPv6Network
from typing import Literal

VERSION: str

class Batch:
    """The records of one call, encoded, and the counters of its frames (every frame in exactly one)."""

    @property
    def frames(self) -> int: ...
    @property
    def decoded(self) -> int: ...
    @property
    def not_pt(self) -> int: ...
    @property
    def malformed(self) -> dict[str, int]:
        """Malformed frames by `layer: reason` (DecodeError.key)."""
    @property
    def format(self) -> Literal["json", "msgpack"]: ...
    @property
    def data(self) -> bytes:
        """Every record in input order: JSON lines (record.json_encoder.encode_lines), or the msgpack
        elements back to back (msgpack_encoder.encode(records) without its array header)."""
    def groups(
        self, ends: bool = False, slot: int | None = None
    ) -> list[tuple[str, bytes, int]] | list[tuple[str, bytes, int, bytes]]:
        """Per source node (src.addr), first seen first, each source's records in input order:
        (address, encoded records, count[, end offset of each record in the bytes when `ends`, as native unsigned
        64-bit integers: memoryview(ends).cast("Q")]).
        With `slot` (routed by flow rules), only that output's records, the sources first seen among them first."""
    @property
    def rules_id(self) -> int:
        """The `Rules.id` of the flow rules that routed these records (Decoder.set_rules), 0 when none did."""
    @property
    def latest_ns(self) -> int:
        """The latest capture time of a record (0 with none)."""
    def rule_counts(self) -> list[tuple[int, int]]:
        """Routed: per rule, the default first, then 1, 2, ...: (probes matched, records kept, i.e. not sampled out)."""
    def slot_data(self, slot: int) -> tuple[bytes, int]:
        """Routed: the records of output `slot` (a pass or sample rule's topic) in input order, and how many."""
    def elsewhere(self) -> list[tuple[int, int]]:
        """Routed: (position, rule) of each record of a raw rule (its frame is taken in Python)."""
    def aggregate(self) -> list[tuple]:
        """Routed: the histogram rules' probes of this batch counted into their windows (kept in its Rules; once
        per batch): the windows they closed, in order, as Rules.hist_tick gives them."""
    def indices(self) -> list[int]:
        """For each record, the index of its frame in this call's input."""
    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview:
        """`memoryview(batch)`: the bytes of `data` without a copy (read-only; the view keeps the batch alive)."""

class Rules:
    """Flow rules in order, compiled for the core (pipeline/core_rules.py builds them from a rules.Ruleset).

    Each rule: (src, sink, dst, segment: [(network as int, prefix length)] or None, session_id (first, last) or
    None, src_if_ids or None, function name, one_in (sample; else 0), records slot (pass, sample; else None)).
    `default_slot`: the main topic's slot, where the default rule's records go."""

    def __init__(
        self, rules: list[tuple], default_slot: int, histograms: list[tuple[int, int, int, list[int], list[int]]] = ...
    ) -> None:
        """`histograms`: per histogram rule (rule index, interval_ns, grace_ns, bounds_ns, hop_bounds_ns); their
        per-path windows are kept here (native/src/path_histogram.rs, the twin of pipeline/path_histogram.py)."""
    @property
    def id(self) -> int:
        """Unique to this compilation: the batches it routed carry it (Batch.rules_id)."""
    def __len__(self) -> int: ...
    def hist_add(self, index: int, values: tuple) -> list[tuple]:
        """One probe from a Record into histogram rule `index`: (src, sink, src_ns, sink_ns, capture_ns, session_id,
        sequence, e2e_ns, [(if_id, time_ns)]); the window it closed, if any."""
    def hist_tick(self, index: int, now_ns: int) -> list[tuple]:
        """The windows of rule `index` the clock has closed: each (rule, start_ns, src, sink, hop_if_ids, count,
        loss, e2e, hop_delays), a delay histogram being (count, min_ns, max_ns, sum_ns, buckets)."""
    def hist_flush(self, index: int) -> list[tuple]:
        """Every open window of rule `index`, now."""
    def hist_late(self, index: int) -> int:
        """Probes of rule `index` for windows already emitted."""

class CaptureReader:
    """The read position in one pcap or pcapng file: what its headers said, and the offset reached."""

    def __init__(self) -> None: ...
    @property
    def offset(self) -> int:
        """File bytes consumed: the next chunk passed to decode_capture starts here."""

class Decoder:
    """decode.Decoder's semantics (TTS shift 0..24 or None, per-source shifts by longest prefix), batch at a time."""

    def __init__(
        self,
        tts_shift: int | None = None,
        shift_by_source: Mapping[IPv6Network | str, int] | Iterable[tuple[IPv6Network | str, int]] | None = None,
        fmt: Literal["json", "msgpack"] = "json",
    ) -> None: ...
    @property
    def tts_shift(self) -> int | None: ...
    @property
    def format(self) -> Literal["json", "msgpack"]: ...
    def shift_for(self, src_addr: str) -> int | None: ...
    def set_source_shift(self, src_addr: str, shift: int | None) -> None:
        """`src_addr` decodes with `shift` from now on (None: no hop times), before any prefix (--tts-shift auto)."""
    def set_rules(self, rules: Rules | None) -> None:
        """Match these flow rules on every record decoded from now on (None: no more): each record gets its rule
        (the first that holds, 0 the default) and, for a sample rule, whether it is kept (Batch.rule_counts...)."""
    def decode_frames(self, frames: Iterable[tuple[int, Buffer] | tuple[int, int, Buffer]], linktype: int = 1) -> Batch:
        """Frames as (capture_ns, frame) with `linktype`, or (linktype, capture_ns, frame) as pcap.Frame."""
    def decode_capture(
        self, reader: CaptureReader, buf: Buffer, last: bool = True, max_frames: int | None = None
    ) -> tuple[Batch, int, str | None]:
        """The frames of a capture chunk read in place (`buf` is the file from reader.offset on; the GIL is
        released). Stops after `max_frames` frames or at the last whole record. Returns (batch, bytes consumed,
        error): the error is pcap.CaptureError's message without the file name (the batch holds the frames
        before the damage); with `last`, bytes left over that make no whole record are such an error."""
    def decode_block(self, block: Buffer, at: int, count: int, linktype: int = 1) -> tuple[Batch, int]:
        """`count` frames of a TPACKET_V3 block read in place (`block`, e.g. a memoryview of the mapped ring; the
        GIL is released), from the frame header at offset `at` in it. Returns (batch, offset of the next frame
        header). A frame that its headers place (partly) outside the block is not read but counted as malformed
        (`ring: frame outside its block`), and so is every frame after a header that is outside."""

def msgpack_array_header(n: int) -> bytes:
    """The msgpack array header for n elements: a msgpack message value is this + a group's bytes."""

# ptc analyze's per-probe work (native/src/analyze.rs; pt_collector/analyze/engines.py): window aggregates as bytes.
AnalyzeDelays = tuple[int, int | None, int | None, int, tuple[int, ...]]  # count, min, max, sum, quantiles

def analyze_split(
    value: bytes, fmt: Literal["json", "msgpack"], key: str, width_ms: int
) -> list[tuple[int, bytes, int]]:
    """One message's records (all of source `key`) per window of `width_ms`, in window order: (latest probe time ms,
    aggregate, probes). ValueError (one line) for a bad value or a record of another source."""

def analyze_merge(a: bytes, b: bytes) -> bytes:
    """Two aggregates of one source and window in one (any order gives the same)."""

def analyze_read(
    data: bytes, levels: list[float]
) -> tuple[
    list[tuple[str, int, AnalyzeDelays, list[AnalyzeDelays]]], list[tuple[int, int, int, int, int, dict[str, int]]]
]:
    """A closed window: ([(path id, probes, e2e, [each hop])], [(session id, reference, lo, hi, probes, {path id:
    probes})]), each delay as (count, min, max, sum, the DDSketch quantiles at `levels`)."""

# Kafka record batches built whole (native/src/record_batch.rs; pt_collector/kafka/recordbatch.py).
def record_batch(
    messages: list[tuple[bytes, list[bytes | memoryview], list[tuple[str, bytes]]]],
    codec: str,
    timestamp_ms: int,
    limit: int,
) -> tuple[bytearray, int]:
    """A Kafka record batch (v2) of the messages (key, the value in parts laid end to end, headers), one record
    each in order, as many as fit in `limit` bytes (at least one), and how many that is; compressed with `codec`
    ("none" or "snappy", in xerial's framing, the blocks starting again at each record), checksummed, the
    producer's state unset (-1, -1, 0). The GIL is released while it is built, the parts read where they lie."""

def set_producer_state(batch: bytearray, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
    """The idempotent producer's state written into a built batch, and its CRC-32C again."""
