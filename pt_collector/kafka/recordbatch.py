"""Kafka record batches built ahead of time: several ptc messages, compressed once, handed to aiokafka whole.

aiokafka's `send()` puts each message into its own per-partition batch and
compresses that batch only when its sender takes it, after the broker has
answered the request before: ptc's compression and the broker's work then
take turns, one request in flight. A `PreparedBatch` is built (records
encoded, compressed, checksummed) as soon as the messages are there, while
the broker works on the request before, and holds as many ptc messages as
fit the broker's limit once compressed (`--batch-bytes` plus 16 KiB, what
the client's batches may hold too). aiokafka takes it with `send_batch`
(its explicit batch API); when its sender takes it, only the idempotent
producer's state (producer id, epoch, base sequence) is written into the
61-byte header and the checksum computed again.

The bytes are those aiokafka's own DefaultRecordBatchBuilder writes (it
builds them): one Kafka record per ptc message, with its key, value and
headers, so consumers read the same messages as before (docs/kafka.md).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

from .message import Message

MAGIC = 2
STATE_AT = 43  # producer id (int64), producer epoch (int16), base sequence (int32), big-endian
CRC_AT, CRC_FROM = 17, 21  # CRC-32C (uint32) of everything from the attributes on
_STATE = struct.Struct(">qhi")
_CRC = struct.Struct(">I")
UNLIMITED = 1 << 31


CODECS = {
    "none": 0,
    "gzip": DefaultRecordBatch.CODEC_GZIP,
    "snappy": DefaultRecordBatch.CODEC_SNAPPY,
    "lz4": DefaultRecordBatch.CODEC_LZ4,
    "zstd": DefaultRecordBatch.CODEC_ZSTD,
}  # --compression name: the record batch's attribute bits


class PreparedBatch:
    """A built record batch of ptc messages, as aiokafka's BatchBuilder offers itself to the producer's sender."""

    __slots__ = ("_data", "_state", "count", "messages")

    def __init__(self, messages: Sequence[Message], compression: int) -> None:
        builder = DefaultRecordBatchBuilder(MAGIC, compression, 0, -1, -1, 0, UNLIMITED)
        for offset, message in enumerate(messages):
            builder.append(offset, None, message.key, message.value, message.headers)
        self._data = builder.build()
        self._state: tuple[int, int, int] | None = None  # as built: -1, -1, 0 (not idempotent)
        self.messages = messages
        self.count = sum(m.count for m in messages)  # ptc records in it

    def __len__(self) -> int:
        return len(self._data)

    # what aiokafka's MessageBatch and sender ask of a BatchBuilder
    def record_count(self) -> int:
        return len(self.messages)

    def size(self) -> int:
        return len(self._data)

    def closed(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def _set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        """The idempotent producer's state, set when its sender takes the batch (again, by a renewed producer)."""
        state = (producer_id, producer_epoch, base_sequence)
        if state != self._state:
            _STATE.pack_into(self._data, STATE_AT, *state)
            _CRC.pack_into(self._data, CRC_AT, calc_crc32c(memoryview(self._data)[CRC_FROM:]))
            self._state = state

    def _build(self) -> bytes:
        return bytes(self._data)


def prepare_batches(messages: Sequence[Message], compression: int, max_bytes: int) -> list[PreparedBatch]:
    """The messages (all for one partition) in built batches of at most `max_bytes` each, in order.

    A batch that comes out larger is built again as two halves; a single message always goes.
    """
    batch = PreparedBatch(messages, compression)
    if len(batch) <= max_bytes or len(messages) == 1:
        return [batch]
    half = len(messages) // 2
    return prepare_batches(messages[:half], compression, max_bytes) + prepare_batches(
        messages[half:], compression, max_bytes
    )
