"""ptc messages as Kafka record batches built whole by the native engine, handed to aiokafka ready to send.

aiokafka's `send()` copies each value into a record batch of its own and
compresses that batch only when its sender takes it, after the broker has
answered the request before: ptc's compression and the broker's work take
turns, and the copies, the software CRC-32C and aiokafka's Python cost
about as much again as the compression (docs/kafka.md, "Batching"). Here a message becomes its batch (the same one
record, key, value and headers, so consumers read the same messages) in
the native engine, compressed and checksummed with the GIL released, on a
worker thread, as soon as the sink cuts it; aiokafka takes it with
`send_batch` (its explicit batch API) and, when its sender takes it, only
the idempotent producer's state is written into the header and the
checksum computed again.

Built natively: messages of at least BUILT_FROM bytes (a batch of one
message is one request to the broker: smaller ones go through `send()`,
which packs several into one batch, so a fleet of many quiet sources still
sends few requests), with `--compression snappy` (the default). The other
codecs (`none` built here measured slower than aiokafka's own), and the
pure-Python engine, go through `send()` as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .message import Message

try:
    from .._native import record_batch, set_producer_state
except ImportError:  # no Rust toolchain at install: every message goes through send()
    record_batch = set_producer_state = None  # type: ignore[assignment]

NATIVE_CODECS = ("snappy",)  # none built here measured slower than aiokafka's own (docs/kafka.md)
BUILT_FROM = 128 * 1024  # value bytes: a message at least this large is built as its own batch
_builder: ThreadPoolExecutor | None = None


class PreparedBatch:
    """One message as a built record batch, offered to aiokafka's `send_batch` as its own BatchBuilder is."""

    __slots__ = ("_data",)

    def __init__(self, data: bytearray) -> None:
        self._data = data

    # what aiokafka's MessageBatch and sender ask of a BatchBuilder
    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes | None, headers: Any = ()) -> None:
        """Full (closed): a send() after it to the same partition starts a batch of its own."""
        return None

    def record_count(self) -> int:
        return 1

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


def prepare(message: Message, compression: str) -> PreparedBatch:
    """The message's record batch (the GIL released while the engine builds it)."""
    data = record_batch(message.key, list(message.parts), message.headers, compression, int(time.time() * 1000))
    return PreparedBatch(data)


def batch_preparer(compression: str, native: bool = True) -> Callable[[Message], PreparedBatch] | None:
    """How the sink builds a message's batch (for one of BUILT_FROM bytes or more) with this --compression, or None
    where every message goes through send(): `native` False (the pure engine chosen), or no native build of it."""
    if record_batch is None or not native or compression not in NATIVE_CODECS:
        return None
    return lambda message: prepare(message, compression)


def builder() -> ThreadPoolExecutor:
    """The one thread the batches are built on, in the order they are cut."""
    global _builder
    if _builder is None:
        _builder = ThreadPoolExecutor(1, thread_name_prefix="ptc-batches")
    return _builder


async def send_built(producer: Any, topic: str, key: bytes, batch: PreparedBatch) -> Any:
    """Into aiokafka's producer: to the partition `send()` would pick for the key; the future settles as send()'s."""
    await producer.client._wait_on_metadata(topic)
    partition = producer._partition(topic, None, None, None, key, None)
    return await producer.send_batch(batch, topic, partition=partition)
