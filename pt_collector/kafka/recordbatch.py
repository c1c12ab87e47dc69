"""ptc messages as Kafka record batches built whole by the native engine, handed to aiokafka ready to send.

aiokafka's `send()` copies each value into a record batch of its own and
compresses that batch only when its sender takes it, after the broker has
answered the request before: ptc's compression and the broker's work take
turns, and the copies, the software CRC-32C and aiokafka's Python cost
about as much again as the compression (docs/kafka.md, "Batching"). Here
messages become a batch (each message one record, key, value and headers,
so consumers read the same messages) in the native engine, compressed and
checksummed with the GIL released, on a worker thread; aiokafka takes it
with `send_batch` (its explicit batch API) and, when its sender takes it,
only the idempotent producer's state is written into the header and the
checksum computed again.

aiokafka sends one batch per partition in a request, and one request at a
time to a broker: a batch of one message made each round trip carry about
a thousand probes. So the sink gives a batch every message waiting for
the same partition when it builds one (KafkaSink._take): as many as fit in
the producer's batch size once compressed (`--batch-bytes` + 16 KiB, under
the broker's message.max.bytes), the more the longer the broker takes.

Built natively: messages of at least BUILT_FROM bytes (smaller ones go
through `send()`, which packs several into one batch), with
`--compression snappy` (the default). The other codecs (`none` built here
measured slower than aiokafka's own), and the pure-Python engine, go
through `send()` as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .message import Message

try:
    from .._native import record_batch, set_producer_state
except ImportError:  # no Rust toolchain at install: every message goes through send()
    record_batch = set_producer_state = None  # type: ignore[assignment]

NATIVE_CODECS = ("snappy",)  # none built here measured slower than aiokafka's own (docs/kafka.md)
BUILT_FROM = 128 * 1024  # value bytes: a message at least this large is built into a batch here
_builder: ThreadPoolExecutor | None = None


class PreparedBatch:
    """Messages as one built record batch, offered to aiokafka's `send_batch` as its own BatchBuilder is."""

    __slots__ = ("_data", "_records")

    def __init__(self, data: bytearray, records: int) -> None:
        self._data, self._records = data, records

    # what aiokafka's MessageBatch and sender ask of a BatchBuilder
    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes | None, headers: Any = ()) -> None:
        """Full (closed): a send() after it to the same partition starts a batch of its own."""
        return None

    def record_count(self) -> int:
        """Records (messages) in it: the idempotent producer's sequence moves on by as many."""
        return self._records

    def size(self) -> int:
        return len(self._data)

    def closed(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def _set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        """Set when aiokafka's sender first takes the batch (again, when a renewed producer sends it)."""
        set_producer_state(self._data, producer_id, producer_epoch, base_sequence)

    def _build(self) -> bytearray:
        return self._data


Preparer = Callable[[Sequence[Message]], PreparedBatch]


def prepare(messages: Sequence[Message], compression: str, limit: int) -> PreparedBatch:
    """The first messages' record batch, as many as fit in `limit` bytes (at least one; `record_count()` says how
    many), the GIL released while the engine builds it."""
    entries = [(m.key, list(m.parts), m.headers) for m in messages]
    return PreparedBatch(*record_batch(entries, compression, int(time.time() * 1000), limit))


def batch_preparer(compression: str, limit: int, native: bool = True) -> Preparer | None:
    """How the sink builds its large messages' batches with this --compression, at most `limit` bytes each (the
    producer's batch size), or None where every message goes through send(): `native` False (the pure engine
    chosen), or no native build of it."""
    if record_batch is None or not native or compression not in NATIVE_CODECS:
        return None
    return lambda messages: prepare(messages, compression, limit)


def partition_of(producer: Any, topic: str, key: bytes) -> int | None:
    """The partition aiokafka's `producer` sends `key` to, or None while it knows no partition of the topic."""
    if not producer._metadata.partitions_for_topic(topic):
        return None
    return int(producer._partition(topic, None, None, None, key, None))


def builder() -> ThreadPoolExecutor:
    """The one thread the batches are built on (every sink's, each sink's in order)."""
    global _builder
    if _builder is None:
        _builder = ThreadPoolExecutor(1, thread_name_prefix="ptc-batches")
    return _builder


async def send_built(producer: Any, topic: str, key: bytes, batch: PreparedBatch) -> Any:
    """Into aiokafka's producer: to the partition `send()` would pick for the key (partition_of); the future settles
    as send()'s."""
    await producer.client._wait_on_metadata(topic)
    return await producer.send_batch(batch, topic, partition=partition_of(producer, topic, key))
