"""Kafka at the edge: how to reach the cluster, starting clients, reading messages back.

Connection settings (brokers, TLS, SASL) are plain values turned into
aiokafka keyword arguments; starting a client retries for a bounded time
and then fails with one line (KafkaUnavailable). Building messages lives in
message.py, batching in batch.py, the producing sink in kafka_sink.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, codec
from aiokafka.errors import ClusterAuthorizationFailedError, KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import ConsumerRecord

from ..codec.record import Record
from .kinds import decode_any_message
from .message import MessageError
from .options import ACKS, COMPRESSIONS, DEFAULT_BROKERS, DEFAULT_COMPRESSION, SASL_MECHANISMS, SECURITY_PROTOCOLS
from .producer import RenewingProducer, Say, outage_proof

CLIENT_ID = "ptc"
CODECS = {"gzip": codec.has_gzip, "snappy": codec.has_snappy, "lz4": codec.has_lz4, "zstd": codec.has_zstd}
REQUEST_OVERHEAD = 64 * 1024  # room for the batch, record and request headers around a value
FETCH_BYTES = 4 * 1024 * 1024

C = TypeVar("C", bound="Client")


class KafkaConfigError(ValueError):
    """Settings that cannot work together (a usage error)."""


class KafkaUnavailable(Exception):
    """The cluster could not be reached or used within the connect timeout."""


class Client(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Security:
    """TLS and SASL settings; the secrets never appear in a repr or a message."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def check(self) -> None:
        """KafkaConfigError (one line) when the settings do not fit the protocol."""
        if self.protocol not in SECURITY_PROTOCOLS:
            raise KafkaConfigError(f"unknown security protocol {self.protocol!r}")
        if self.uses_sasl and self.sasl_mechanism not in SASL_MECHANISMS:
            raise KafkaConfigError(f"unsupported SASL mechanism {self.sasl_mechanism!r}")
        if self.uses_sasl and not (self.sasl_username and self.sasl_password):
            raise KafkaConfigError(f"{self.protocol} needs --sasl-username and --sasl-password (or PTC_SASL_PASSWORD)")
        if not self.uses_sasl and (self.sasl_username or self.sasl_password):
            raise KafkaConfigError("SASL credentials need --security-protocol SASL_PLAINTEXT or SASL_SSL")
        ssl_files = self.ssl_cafile or self.ssl_certfile or self.ssl_keyfile
        if not self.uses_ssl and ssl_files:
            raise KafkaConfigError("--ssl-* files need --security-protocol SSL or SASL_SSL")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise KafkaConfigError("--ssl-keyfile needs --ssl-certfile")

    def client_options(self) -> dict[str, object]:
        """aiokafka keyword arguments for these settings."""
        self.check()
        options: dict[str, object] = {"security_protocol": self.protocol}
        if self.uses_sasl:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.uses_ssl:
            options["ssl_context"] = self._ssl_context()
        return options

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            context = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile, password=self.ssl_password
            )
        except (OSError, ssl.SSLError) as exc:  # the message names the file, never the password
            raise KafkaConfigError(f"TLS setup failed: {exc.strerror or exc}") from None
        if not self.ssl_check_hostname:
            context.check_hostname = False
        return context


@dataclass(frozen=True)
class Cluster:
    """Where the brokers are and how to talk to them."""

    brokers: str = DEFAULT_BROKERS
    security: Security = field(default_factory=Security)
    connect_timeout_s: float = 10.0

    def client_options(self) -> dict[str, object]:
        servers = [b.strip() for b in self.brokers.split(",") if b.strip()]
        if not servers:
            raise KafkaConfigError("no broker address given")
        return {"bootstrap_servers": servers, "client_id": CLIENT_ID, **self.security.client_options()}


@dataclass(frozen=True)
class ProducerSettings:
    """How records are produced: acknowledgements, idempotence, compression, size limits."""

    acks: str = "all"
    idempotence: bool | None = None  # None: on when acks is "all"
    compression: str = DEFAULT_COMPRESSION
    max_value_bytes: int = 900 * 1024
    native_batches: bool = True  # record batches built by the native engine where it is built (kafka/recordbatch.py)

    @property
    def max_batch_bytes(self) -> int:
        """A record batch's largest size, compressed (aiokafka's max_batch_size; the native engine's batches of
        several messages keep to it too): a message of max_value_bytes and room for its framing."""
        return self.max_value_bytes + 16 * 1024

    def check(self) -> None:
        if self.acks not in ACKS:
            raise KafkaConfigError(f"--acks must be one of {', '.join(ACKS)}")
        if self.idempotence and self.acks != "all":
            raise KafkaConfigError("--idempotence needs --acks all")
        if self.compression not in COMPRESSIONS:
            raise KafkaConfigError(f"unknown compression {self.compression!r}")
        check_codec(self.compression)

    def producer_options(self) -> dict[str, object]:
        """aiokafka keyword arguments; ptc batches itself, so the client's linger stays 0."""
        self.check()
        return {
            "acks": "all" if self.acks == "all" else int(self.acks),
            "enable_idempotence": self.acks == "all" if self.idempotence is None else self.idempotence,
            "compression_type": None if self.compression == "none" else self.compression,
            "max_batch_size": self.max_batch_bytes,
            "max_request_size": max(1024 * 1024, self.max_value_bytes + REQUEST_OVERHEAD),
            "linger_ms": 0,
        }


def check_codec(compression: str) -> None:
    """KafkaConfigError naming the extra to install when a codec's package is missing."""
    if compression != "none" and not CODECS[compression]():
        raise KafkaConfigError(
            f"--compression {compression} needs the cramjam package: pip install 'pt-collector[{compression}]'"
        )


async def start_client(make: Callable[[], C], cluster: Cluster) -> C:
    """A started client, retrying while the failure is retriable, for at most the connect timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cluster.connect_timeout_s
    delay = 0.1
    with _last_client_error() as last_error:
        while True:
            client = make()
            try:
                await asyncio.wait_for(client.start(), max(0.05, deadline - loop.time()))
                return client
            except (TimeoutError, KafkaError, OSError) as exc:
                await _stop_quietly(client)
                remaining = deadline - loop.time()
                if not _retriable(exc) or remaining <= 0:
                    raise KafkaUnavailable(_unavailable(cluster, exc, last_error.text)) from None
            await asyncio.sleep(min(delay, remaining))
            delay = min(2 * delay, 1.0)


class _LastError(logging.Handler):
    """Keeps the reason of the last failed connection aiokafka logged (its bootstrap error hides it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        error = record.args[-1] if isinstance(record.args, tuple) and record.args else None
        if isinstance(error, BaseException):
            self.text = str(error).split(": <AIOKafkaConnection")[0] or type(error).__name__


@contextlib.contextmanager
def _last_client_error() -> Iterator[_LastError]:
    handler = _LastError()
    logger = logging.getLogger("aiokafka")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or bool(getattr(exc, "retriable", False))


def _unavailable(cluster: Cluster, exc: BaseException, last_error: str) -> str:
    if isinstance(exc, KafkaConnectionError | TimeoutError):
        where = f"cannot reach Kafka at {cluster.brokers} within {cluster.connect_timeout_s:g} s (--connect-timeout)"
        return f"{where}: {last_error}" if last_error else where
    hint = ""
    if isinstance(exc, ClusterAuthorizationFailedError):  # the first thing an idempotent producer asks for
        hint = " (the idempotent producer needs IdempotentWrite on the cluster: grant it, or --no-idempotence)"
    return f"cannot use Kafka at {cluster.brokers}: {type(exc).__name__}: {exc}{hint}"


async def _stop_quietly(client: Client) -> None:
    with contextlib.suppress(TimeoutError, KafkaError, OSError):
        await client.stop()


async def start_producer(
    cluster: Cluster, settings: ProducerSettings, *topics: str, say: Say | None = None
) -> RenewingProducer:
    """A started producer that has the topics' metadata (each exists, or the broker created it).

    It rides out broker outages of any length (kafka/producer.py); `say`
    hears of it when it has to be renewed.
    """
    start = partial(_start_producer, cluster, settings, topics)
    return RenewingProducer(await start(), start, say or (lambda level, message: None))


async def _start_producer(cluster: Cluster, settings: ProducerSettings, topics: tuple[str, ...]) -> AIOKafkaProducer:
    options = {**cluster.client_options(), **settings.producer_options()}
    producer = await start_client(lambda: outage_proof(AIOKafkaProducer(**options)), cluster)
    try:
        for topic in topics:
            await wait_for_topic(producer, cluster, topic)
    except KafkaUnavailable:
        await _stop_quietly(producer)
        raise
    return producer


async def wait_for_topic(producer: AIOKafkaProducer, cluster: Cluster, topic: str) -> None:
    """The topic's metadata, within the connect timeout (KafkaUnavailable, in one line, when it cannot be had)."""
    try:
        await asyncio.wait_for(producer.partitions_for(topic), cluster.connect_timeout_s)
    except TimeoutError:
        raise KafkaUnavailable(
            f"no topic {topic!r} on Kafka at {cluster.brokers} within {cluster.connect_timeout_s:g} s "
            "(it does not exist and the broker does not create topics on first use?)"
        ) from None
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot use topic {topic!r} on Kafka at {cluster.brokers}: {exc}") from None


@dataclass
class ConsumeStats:
    records: int = 0
    messages: int = 0
    bad: list[str] = field(default_factory=list)  # "partition P offset O: reason"


async def consume(
    cluster: Cluster,
    topic: str,
    emit: Callable[[list[Record]], None],
    *,
    from_beginning: bool = False,
    max_records: int | None = None,
    idle_timeout_s: float | None = None,
    stats: ConsumeStats | None = None,
) -> ConsumeStats:
    """Records of the topic's ptc messages to `emit`, until `max_records` or `idle_timeout_s` without any.

    `stats` are filled as it goes, so they survive an interruption.
    """
    options = {
        **cluster.client_options(),
        "group_id": None,  # reads every partition, commits nothing
        "isolation_level": "read_committed",  # of transactional producers (ptc analyze), what they committed
        "auto_offset_reset": "earliest" if from_beginning else "latest",
        "enable_auto_commit": False,
        "max_partition_fetch_bytes": FETCH_BYTES,
    }
    consumer = await start_client(lambda: AIOKafkaConsumer(**options), cluster)
    try:
        await _subscribe(consumer, cluster, topic)
        return await _read(consumer, emit, max_records, idle_timeout_s, stats if stats is not None else ConsumeStats())
    finally:
        await _stop_quietly(consumer)


async def _subscribe(consumer: AIOKafkaConsumer, cluster: Cluster, topic: str) -> None:
    """Subscribe to an existing topic; KafkaUnavailable when there is none.

    The topic is looked up among all the cluster's topics first: a consumer that asks
    for one topic's metadata gets it created by a broker with auto.create.topics.enable
    (aiokafka always asks so), and one without waits for it until the connect timeout.
    """
    try:
        topics = await asyncio.wait_for(consumer.topics(), cluster.connect_timeout_s)
    except (TimeoutError, KafkaError) as exc:
        raise KafkaUnavailable(_unavailable(cluster, exc, "")) from None
    if topic not in topics:
        raise KafkaUnavailable(f"no topic {topic!r} on Kafka at {cluster.brokers} (ptc consume does not create topics)")
    consumer.subscribe([topic])


async def _read(
    consumer: AIOKafkaConsumer,
    emit: Callable[[list[Record]], None],
    max_records: int | None,
    idle_timeout_s: float | None,
    stats: ConsumeStats,
) -> ConsumeStats:
    loop = asyncio.get_running_loop()
    last = loop.time()
    while max_records is None or stats.records < max_records:
        wait_s = 1.0 if idle_timeout_s is None else max(0.0, min(1.0, last + idle_timeout_s - loop.time()))
        batches = await consumer.getmany(timeout_ms=int(wait_s * 1000))
        if not batches:
            if idle_timeout_s is not None and loop.time() - last >= idle_timeout_s:
                break
            continue
        last = loop.time()
        for message in itertools.chain.from_iterable(batches.values()):
            if max_records is not None and stats.records >= max_records:
                break
            records = _records_of(message, stats)
            if max_records is not None:
                records = records[: max_records - stats.records]
            if records:
                stats.records += len(records)  # read, whether or not `emit` can write them out
                emit(records)
    return stats


def _records_of(message: ConsumerRecord, stats: ConsumeStats) -> list[Record]:
    stats.messages += 1
    try:
        return list(decode_any_message(message.value, message.headers))
    except MessageError as exc:
        stats.bad.append(f"partition {message.partition} offset {message.offset}: {exc}")
        return []
