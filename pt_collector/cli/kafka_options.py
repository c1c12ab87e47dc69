"""The Kafka options of `ptc replay` (and later `ptc collect`) and `ptc consume`.

Each group is a decorator adding click options; the matching function
turns the parsed values into the library's settings. Secrets come from
options or the environment and are never echoed back.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..kafka.options import (
    ACKS,
    COMPRESSIONS,
    DEFAULT_BROKERS,
    DEFAULT_COMPRESSION,
    DEFAULT_TOPIC,
    FORMATS,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    WHEN_FULL,
)

if TYPE_CHECKING:  # the Kafka client (aiokafka) is imported when a command goes to Kafka, not at every start
    from ..kafka.client import Cluster, ProducerSettings
    from ..pipeline.batch import Batcher

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_BATCH_BYTES = 900 * 1024  # under the broker's default message.max.bytes (1 MiB)
MIN_BATCH_BYTES = 1024


def _apply(decorators: list[Callable[[F], F]]) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        for option in reversed(decorators):
            command = option(command)
        return command

    return decorate


TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _topic_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not TOPIC_NAME.fullmatch(value) or value in (".", ".."):
        raise click.BadParameter("a Kafka topic name is 1 to 249 of the characters a-z A-Z 0-9 . _ -")
    return value


def topic_option(verb: str) -> Callable[[F], F]:
    return click.option(
        "-t", "--topic", default=DEFAULT_TOPIC, show_default=True, metavar="TOPIC", callback=_topic_name,
        help=f"Kafka topic to {verb}.",
    )  # fmt: skip


def broker_address_error(address: str) -> str | None:
    """Why `address` is not HOST, HOST:PORT, an IPv6 address or [IPv6]:PORT (port 1..65535), or None when it is."""
    host, port = address, ""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        if rest and not rest.startswith(":"):
            return f"{address!r}: write an IPv6 address with a port as [ADDRESS]:PORT"
        port = rest[1:]
        if not _is_ipv6(host):
            return f"{address!r}: {host!r} is not an IPv6 address"
    elif address.count(":") > 1:
        return None if _is_ipv6(address) else f"{address!r} is neither HOST:PORT nor an IPv6 address"
    elif ":" in address:
        host, _, port = address.partition(":")
        if not port:
            return f"{address!r}: no port after the colon"
    if not host:
        return f"{address!r}: no host name"
    if any(c.isspace() or c in "/@" for c in host):
        return f"{address!r}: {host!r} is not a host name"
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return f"{address!r}: the port {port!r} is not a number 1..65535"
    return None


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _brokers(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A comma-separated list of broker addresses, checked here: a usage error names the bad one."""
    addresses = [address.strip() for address in value.split(",") if address.strip()]
    if not addresses:
        raise click.BadParameter("no broker address given (HOST:PORT,...)")
    for address in addresses:
        if error := broker_address_error(address):
            raise click.BadParameter(error)
    return value


CLUSTER_OPTIONS: list[Callable[[F], F]] = [
    click.option(
        "-b",
        "--brokers",
        default=DEFAULT_BROKERS,
        show_default=True,
        envvar="PTC_BROKERS",
        show_envvar=True,
        metavar="HOST:PORT,...",
        callback=_brokers,
        help="Kafka bootstrap brokers (an IPv6 address with a port as [ADDRESS]:PORT; without a port, 9092).",
    ),
    click.option(
        "--connect-timeout",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        metavar="SECONDS",
        help="How long to keep trying to reach the brokers at start before giving up (exit status 1).",
    ),
    click.option(
        "--security-protocol",
        type=click.Choice(SECURITY_PROTOCOLS),
        default="PLAINTEXT",
        show_default=True,
        help="How to talk to the brokers: TLS (SSL), SASL, or both.",
    ),
    click.option(
        "--sasl-mechanism",
        type=click.Choice(SASL_MECHANISMS),
        default="PLAIN",
        show_default=True,
        help="SASL mechanism, with --security-protocol SASL_PLAINTEXT or SASL_SSL.",
    ),
    click.option("--sasl-username", metavar="NAME", help="SASL user name."),
    click.option(
        "--sasl-password",
        metavar="SECRET",
        envvar="PTC_SASL_PASSWORD",
        show_envvar=True,
        help="SASL password; better from the environment than on the command line.",
    ),
    click.option(
        "--ssl-cafile",
        type=click.Path(exists=True, dir_okay=False),
        help="CA certificates (PEM) to verify the brokers with [default: the system's].",
    ),
    click.option(
        "--ssl-certfile", type=click.Path(exists=True, dir_okay=False), help="Client certificate (PEM), for mutual TLS."
    ),
    click.option(
        "--ssl-keyfile", type=click.Path(exists=True, dir_okay=False), help="Client private key (PEM), for mutual TLS."
    ),
    click.option(
        "--ssl-password",
        metavar="SECRET",
        envvar="PTC_SSL_PASSWORD",
        show_envvar=True,
        help="Password of the client private key.",
    ),
    click.option(
        "--ssl-check-hostname/--ssl-no-check-hostname",
        default=True,
        show_default=True,
        help="Check that the broker's certificate names the host connected to.",
    ),
    click.option("-v", "--verbose", is_flag=True, help="Show the Kafka client's own warnings and errors on stderr."),
]

PRODUCER_OPTIONS: list[Callable[[F], F]] = [
    click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="json",
        show_default=True,
        help="Encoding of the records in a message: JSON lines or one msgpack array.",
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=1000,
        show_default=True,
        metavar="RECORDS",
        help="Most records in one message (one source node per message).",
    ),
    click.option(
        "--batch-bytes",
        type=click.IntRange(min=MIN_BATCH_BYTES),
        default=DEFAULT_BATCH_BYTES,
        show_default=True,
        metavar="BYTES",
        help="Largest message value before compression; keep it 16 KiB under the broker's message.max.bytes "
        "(the client may add that much around it).",
    ),
    click.option(
        "--linger-ms",
        type=click.IntRange(min=0),
        default=100,
        show_default=True,
        metavar="MS",
        help="Longest a record waits for its batch to fill.",
    ),
    click.option(
        "--compression",
        type=click.Choice(COMPRESSIONS),
        default=DEFAULT_COMPRESSION,
        show_default=True,
        help="Kafka compression codec (snappy: the fastest end to end in ptc's benchmark); aiokafka's gzip and lz4 "
        "run at level 9, slow.",
    ),
    click.option(
        "--acks",
        type=click.Choice(ACKS),
        default="all",
        show_default=True,
        help="Broker acknowledgements a message needs.",
    ),
    click.option(
        "--idempotence/--no-idempotence",
        default=None,
        help="Idempotent producer (no duplicates on retries) [default: on with --acks all].",
    ),
    click.option(
        "--max-pending",
        type=click.IntRange(min=1),
        default=200_000,
        show_default=True,
        metavar="RECORDS",
        help="Most records held between decoding and the broker's acknowledgement (memory bound).",
    ),
]

cluster_options = _apply(CLUSTER_OPTIONS)


def producer_options(when_full: str) -> Callable[[F], F]:
    """The producer options; `when_full` is the command's default policy (replay blocks, live capture drops)."""
    policy = click.option(
        "--when-full",
        type=click.Choice(WHEN_FULL),
        default=when_full,
        show_default=True,
        help="At --max-pending: block (wait, lose nothing) or drop (drop the newest records and count them).",
    )
    return _apply([*PRODUCER_OPTIONS, policy])


CLUSTER_PARAMS = (
    "brokers", "connect_timeout", "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
    "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_check_hostname", "verbose",
)  # fmt: skip
PRODUCER_PARAMS = (
    "topic", "fmt", "batch_size", "batch_bytes", "linger_ms", "compression", "acks", "idempotence", "max_pending",
    "when_full",
)  # fmt: skip

KAFKA_ONLY_PARAMS = tuple(name for name in PRODUCER_PARAMS + CLUSTER_PARAMS if name != "verbose")  # -v: harmless


def cluster_from(params: Mapping[str, Any]) -> Cluster:
    from ..kafka.client import Cluster, Security

    security = Security(
        protocol=params["security_protocol"],
        sasl_mechanism=params["sasl_mechanism"],
        sasl_username=params["sasl_username"],
        sasl_password=params["sasl_password"],
        ssl_cafile=params["ssl_cafile"],
        ssl_certfile=params["ssl_certfile"],
        ssl_keyfile=params["ssl_keyfile"],
        ssl_password=params["ssl_password"],
        ssl_check_hostname=params["ssl_check_hostname"],
    )
    return Cluster(brokers=params["brokers"], security=security, connect_timeout_s=params["connect_timeout"])


def producer_settings_from(params: Mapping[str, Any]) -> ProducerSettings:
    from ..kafka.client import ProducerSettings
    from ..pipeline.engine import engine_name

    return ProducerSettings(
        acks=params["acks"],
        idempotence=params["idempotence"],
        compression=params["compression"],
        max_value_bytes=params["batch_bytes"],
        native_batches=engine_name() == "native",
    )


def batcher_from(params: Mapping[str, Any]) -> Batcher:
    from ..pipeline.batch import Batcher

    return Batcher(params["fmt"], params["batch_size"], params["batch_bytes"], params["linger_ms"] / 1000)


def given_on_command_line(ctx: click.Context, names: tuple[str, ...]) -> list[str]:
    """The options among `names` the user typed (not defaults, not the environment)."""
    given = [name for name in names if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    return [next(p.opts[-1] for p in ctx.command.params if p.name == name) for name in given]
