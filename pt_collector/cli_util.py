"""What the ptc commands share: exit status, errors, the event loop, outputs, the Kafka client's log."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Coroutine, Iterator
from typing import BinaryIO, TypeVar

import click

from .kafka import KafkaConfigError

EXIT_FAILED = 1
T = TypeVar("T")

TTS_SHIFT_HELP = (
    "TTS template shift (0..24) of the midpoints, for midpoint time reconstruction; "
    "without it every hop's time_ns is null. It is a per-router setting, not in the packet: "
    "upstream VPP template 2 is 16, the original VPP default 18, Linux template 1 is 18."
)


class Failed(click.ClickException):
    """The command ran but could not do all of its work."""

    exit_code = EXIT_FAILED


def run_async(coro: Coroutine[object, object, T]) -> T:
    """Run a coroutine on uvloop: installed here, at the entry point only."""
    import uvloop

    return uvloop.run(coro)


@contextlib.contextmanager
def open_output(output: str, append: bool = False) -> Iterator[BinaryIO]:
    """FILE or '-' (stdout); `append` writes each batch in one unbuffered write, so processes can share a file."""
    if output == "-":
        yield sys.stdout.buffer
        return
    try:
        stream = open(output, "ab", buffering=0) if append else open(output, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise Failed(f"cannot write {output}: {exc.strerror}") from None
    with stream:
        yield stream


@contextlib.contextmanager
def kafka_usage() -> Iterator[None]:
    """Settings that cannot work together are a usage error (exit status 2)."""
    try:
        yield
    except KafkaConfigError as exc:
        raise click.UsageError(str(exc)) from None


def kafka_client_log(verbose: bool) -> None:
    """aiokafka logs every failed connection attempt; ptc reports the outcome in one line instead (-v shows them)."""
    handler = logging.StreamHandler(sys.stderr) if verbose else logging.NullHandler()
    handler.setFormatter(logging.Formatter("aiokafka: %(levelname)s: %(message)s"))
    logger = logging.getLogger("aiokafka")
    logger.propagate = False
    logger.handlers = [handler]
    if not verbose:  # a failed connection attempt leaves one behind for the garbage collector, which says so
        logging.getLogger("asyncio").addFilter(_unclosed_kafka_connection)


def _unclosed_kafka_connection(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Unclosed AIOKafka")
