"""`--tts-shift auto` and the check of a fixed shift: an Engine around the engine in use.

Either engine decodes as before; this one shows the records' raw TTS and
source and sink times to a `ShiftWatch` (codec/shift_infer.py): every probe
of a source it is learning, then a sample (one record in CHECK_EVERY, read
out of the native engine's JSON lines without decoding the rest). When a
source's shift is learnt or changes, the records of that batch are timed
again with it and the engine is told (`set_source_shifts`: the native one
keeps a map of exact source addresses, one hash lookup per probe; the pure
one takes the source as a /128 prefix).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from ipaddress import IPv6Address, IPv6Network

import msgspec

from ..capture import Captured
from ..capture.pcap import Bytes
from ..codec.record import EncodedRecords, Record, json_decoder
from ..codec.shift_infer import AUTO, CHECK_EVERY, ShiftWatch, Source
from ..codec.tts import midpoint_times
from .core_rules import RuleMatching
from .engine import BlockEngine, CaptureDecoder, Decoded, Engine, SourceShifting, make_engine

Shift = int | str | None  # a shift 0..24, AUTO, or None (no times)
Say = Callable[[str], None]
NEWLINE = re.compile(b"\n")  # searches a memoryview too (bytes.find would need a copy)
MAX_SOURCES = 65_536  # sources learnt or checked at most (crafted probes from ever new addresses stop there)
EngineFactory = Callable[[int | None, Mapping[IPv6Network, int | None]], Engine | SourceShifting]


def watching(
    tts_shift: Shift, shift_by_source: Mapping[IPv6Network, Shift] | None, say: Say, fmt: str = "json"
) -> Engine:
    """The engine in use (encoding to `fmt`), learning (AUTO) or checking the shifts it is given; no shift at all:
    the bare engine."""
    prefixes = dict(shift_by_source or {})
    if tts_shift is None and not any(shift is not None for shift in prefixes.values()):
        return make_engine(None, prefixes or None, fmt)  # type: ignore[arg-type]
    return ShiftWatchingEngine(tts_shift, prefixes, say, partial(make_engine, fmt=fmt))


class ShiftWatchingEngine:
    """Decodes with the inner engine; learns AUTO shifts per source, checks fixed ones, says so through `say`."""

    def __init__(
        self,
        tts_shift: Shift,
        shift_by_source: Mapping[IPv6Network, Shift],
        say: Say,
        factory: EngineFactory = make_engine,  # type: ignore[assignment]
    ) -> None:
        self.tts_shift = tts_shift
        self.prefixes = sorted(shift_by_source.items(), key=lambda entry: -entry[0].prefixlen)
        self.say = say
        self.watch = ShiftWatch()
        self._ignored: set[str] = set()  # sources with no shift configured: nothing to learn or check
        self._full = False  # MAX_SOURCES reached: said once
        base = None if tts_shift == AUTO else tts_shift
        shifts = {prefix: None if shift == AUTO else shift for prefix, shift in self.prefixes}
        self.engine: Engine | SourceShifting = factory(base, shifts)  # type: ignore[arg-type]
        self.name = self.engine.name
        self._offset = 0  # where the next sample starts, so that successive batches sample different records
        if isinstance(self.engine, BlockEngine):  # a ring's blocks stay decoded in place, watched the same way
            self.decode_block = self._decode_block
        if isinstance(self.engine, RuleMatching):  # flow rules matched in the core (a batch re-timed is matched again)
            self.match_rules = self.engine.match_rules

    def _decode_block(self, block: memoryview, at: int, count: int, linktype: int) -> tuple[Decoded, int]:
        decoded, at = self.engine.decode_block(block, at, count, linktype)  # type: ignore[union-attr]
        if decoded.records:
            self.look(decoded)
        return decoded, at

    def decode_batch(self, frames: Sequence[Captured], linktype: int, keep_frames: bool = False) -> Decoded:
        decoded = self.engine.decode_batch(frames, linktype, keep_frames)  # type: ignore[union-attr]
        if decoded.records:
            self.look(decoded)
        return decoded

    def open_capture(self, keep_frames: bool = False) -> CaptureDecoder:
        return WatchedCapture(self, self.engine.open_capture(keep_frames))  # type: ignore[union-attr]

    def close(self) -> None:
        """The input ended: sources still learning get their verdict (said, nothing re-timed)."""
        self.watch.finish()
        self.watch.take_changes()
        self._say()

    # ---------------------------------------------------------------- per batch

    def look(self, decoded: Decoded) -> None:
        records = decoded.records
        if not self.watch.learning():
            sampled = self._sample(records)
            if not any(self._observe(record, sampled=True) for record in sampled):
                return self._apply(decoded)
        for record in records:  # a source is learning: all of its probes count
            self._observe(record, sampled=False)
        self._apply(decoded)

    def _sample(self, records: Sequence[Record]) -> list[Record]:
        """About one record in CHECK_EVERY; from JSON lines, read at byte offsets without decoding the rest."""
        if not isinstance(records, EncodedRecords):
            picked = list(records[self._offset % CHECK_EVERY :: CHECK_EVERY])
            self._offset += len(records)
            return picked
        data, count = records.json_lines, len(records)  # bytes, or a view of the native engine's batch
        step = max(1, len(data) * CHECK_EVERY // count)
        picked = []
        for at in range(self._offset % step, len(data), step):  # the line after the one `at` falls in
            if (end := NEWLINE.search(data, at)) is None or (after := NEWLINE.search(data, end.end())) is None:
                break
            picked.append(json_decoder.decode(data[end.end() : after.start()]))
        self._offset += len(data)
        return picked

    def _observe(self, record: Record, sampled: bool) -> bool:
        """Show one record to the watch; True: its source is new (learning from now on)."""
        addr = record.src.addr
        source = self.watch.sources.get(addr)
        new = source is None and addr not in self._ignored
        if source is None and (source := self._track(addr)) is None:
            return False
        if new and sampled:
            return True  # the caller goes through the whole batch for it
        if (sampled or self.watch.wants(source)) and record.e2e_ns is not None:
            self.watch.observe(source, [hop.tts for hop in record.hops], record.src.time_ns, record.sink.time_ns)  # type: ignore[union-attr]
        return new

    def _track(self, addr: str) -> Source | None:
        shift, origin = self._configured(addr)
        if shift is None or len(self.watch.sources) >= MAX_SOURCES:
            if shift is not None and not self._full:
                self._full = True
                newer = "hop times null" if shift == AUTO else f"decoded with {shift}, unchecked"
                self.say(f"TTS shift: {MAX_SOURCES:,} sources watched already; newer ones are not ({newer})")
            if len(self._ignored) < MAX_SOURCES:
                self._ignored.add(addr)
            return None
        return self.watch.track(addr, None if shift == AUTO else shift, shift == AUTO, origin)  # type: ignore[arg-type]

    def _configured(self, addr: str) -> tuple[Shift, str]:
        address = IPv6Address(addr)
        for prefix, shift in self.prefixes:
            if address in prefix:
                return shift, f'the shift of "{prefix}" in [tts_shift_by_source],'
        return self.tts_shift, "--tts-shift"

    def _apply(self, decoded: Decoded) -> None:
        """New shifts: this batch's records of those sources timed again, the engine rebuilt; lines said."""
        changes = self.watch.take_changes()
        if changes:
            decoded.records = [
                retimed(record, changes[record.src.addr]) if record.src.addr in changes else record
                for record in decoded.records
            ]
            self.engine.set_source_shifts(changes)  # type: ignore[union-attr]
        self._say()

    def _say(self) -> None:
        for line in self.watch.take_lines():
            self.say(line)


def retimed(record: Record, shift: int | None) -> Record:
    """The record with its hop times made with `shift` (None: no times), as the decoder makes them."""
    if record.e2e_ns is None or not record.hops:
        return record
    tts = [hop.tts for hop in record.hops]
    sink_ns = record.sink.time_ns  # type: ignore[union-attr]
    times = midpoint_times(tts, shift, record.src.time_ns, sink_ns) if shift is not None else [None] * len(tts)
    hops = tuple(msgspec.structs.replace(hop, time_ns=t) for hop, t in zip(record.hops, times, strict=True))
    return msgspec.structs.replace(record, hops=hops)


class WatchedCapture:
    """A capture decoded by the inner engine's own reader (in place, for the native one), every batch watched."""

    def __init__(self, watching: ShiftWatchingEngine, capture: CaptureDecoder) -> None:
        self._watching, self._capture = watching, capture

    def decode(self, buf: Bytes, start: int, last: bool) -> tuple[list[Decoded], int, str | None]:
        batches, used, error = self._capture.decode(buf, start, last)
        for decoded in batches:
            if decoded.records:
                self._watching.look(decoded)
        return batches, used, error
