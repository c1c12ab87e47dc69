"""What the ptc commands share: exit status, errors, the event loop, outputs, the Kafka client's log."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import click

if TYPE_CHECKING:
    import logging

EXIT_FAILED = 1
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
ERROR = "Error: "  # every error line on stderr starts so: click's own form, for usage errors too
WARNING = "Warning: "

TTS_SHIFT_HELP = (
    "TTS template shift (0..24) of the midpoints, for midpoint time reconstruction; "
    "without it every hop's time_ns is null. It is a per-router setting, not in the packet: "
    "upstream VPP template 2 is 16, the original VPP default 18, Linux template 1 is 18. "
    "'auto' learns it per source node from its first probes (a line on stderr says which, from how many "
    "probes and how surely; hop times stay null where it cannot decide) and keeps checking it; "
    "a fixed shift that the probes contradict is warned about once per source."
)


class Failed(click.ClickException):
    """The command ran but could not do all of its work."""

    exit_code = EXIT_FAILED


def say_error(message: str) -> None:
    """An error line on stderr, in click's form (`Error: ...`), which every ptc error takes."""
    click.echo(ERROR + message, err=True)


def say_warning(message: str) -> None:
    click.echo(WARNING + message, err=True)


def count_option(what: str) -> Callable[[F], F]:
    """`-c N`: how many probes or records, in every command that has it (tcpdump's and kcat's -c)."""
    return click.option("-c", "--count", type=click.IntRange(min=1), default=None, metavar="N", help=what)


numeric_option = click.option(
    "-n", "--numeric", is_flag=True, expose_value=False,
    help="Accepted for tcpdump's sake (tcpdump -n): ptc never resolves addresses to names.",
)  # fmt: skip


def run_async(coro: Coroutine[object, object, T]) -> T:
    """Run a coroutine on uvloop: installed here, at the entry point only."""
    import uvloop

    return uvloop.run(coro)


def hold_standard_fds() -> None:
    """Started with stdin, stdout or stderr closed (`>&-`), hold that descriptor open on /dev/null.

    Otherwise the next socket or file opened takes it, and uvloop aborts the process when
    it closes a descriptor below 3. Python has set sys.stdout (and the others) to None
    already, which is how open_output still tells that stdout is closed.
    """
    for fd, stream in enumerate((sys.stdin, sys.stdout, sys.stderr)):
        if stream is None:
            held = os.open(os.devnull, os.O_RDWR)
            if held != fd:  # a lower one was closed too and took it, or this one is taken already
                os.close(held)


@contextlib.contextmanager
def stdout_report() -> Iterator[None]:
    """Around a command's report on stdout (lines, a table): a closed stdout, or one that refuses a write
    (a full disk), is Failed in one line; a reader that went away (| head) ends the command quietly."""
    from ..pipeline.sinks import OutputError

    if sys.stdout is None:
        raise Failed("cannot write stdout: it is closed")
    try:
        yield
        sys.stdout.flush()
    except (OSError, OutputError) as exc:
        with contextlib.suppress(OSError):  # what stdout still buffers would fail again at exit: let it go nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if isinstance(exc, BrokenPipeError) or (isinstance(exc, OutputError) and exc.reader_gone):
            sys.stderr.close()
            raise SystemExit(0) from None
        raise Failed(f"cannot write stdout: {exc.strerror}" if isinstance(exc, OSError) else str(exc)) from None


def echo_or_raise(line: str) -> None:
    """click.echo to stdout, its OSError as OutputError: inside a replay, which takes OSError for a capture error."""
    from ..pipeline.sinks import OutputError

    try:
        click.echo(line)
    except OSError as exc:
        error = OutputError(f"cannot write stdout: {exc.strerror}", reader_gone=isinstance(exc, BrokenPipeError))
        raise error from None


def output_name(output: str) -> str:
    """How messages name an --output: its path, or stdout."""
    return "stdout" if output == "-" else output


def check_output(output: str) -> None:
    """Failed (one line, exit status 1) when --output cannot be opened; a FILE is created empty."""
    with open_output(output):
        pass


@contextlib.contextmanager
def open_output(output: str, append: bool = False) -> Iterator[BinaryIO]:
    """FILE or '-' (stdout), unbuffered: each batch is one write, whose failure LineWriter counts exactly.

    `append` lets processes share a file. A closed stdout, or a FILE that cannot be opened, is Failed.
    """
    if output == "-":
        if sys.stdout is None:  # started with stdout closed (>&-)
            raise Failed("cannot write stdout: it is closed (give --output FILE)")
        sys.stdout.flush()
        buffered = sys.stdout.buffer
        yield buffered.raw if isinstance(buffered, io.BufferedWriter) else buffered  # type: ignore[misc]
        return
    try:
        stream = open(output, "ab" if append else "wb", buffering=0)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise Failed(f"cannot write {output}: {exc.strerror}") from None
    with stream:
        yield stream


@contextlib.contextmanager
def kafka_usage() -> Iterator[None]:
    """Settings that cannot work together are a usage error (exit status 2)."""
    from ..kafka.client import KafkaConfigError

    try:
        yield
    except KafkaConfigError as exc:
        raise click.UsageError(str(exc)) from None


def kafka_client_log(verbose: bool) -> None:
    """aiokafka logs every failed connection attempt; ptc reports the outcome in one line instead (-v shows them)."""
    import logging

    handler = logging.StreamHandler(sys.stderr) if verbose else logging.NullHandler()
    handler.setFormatter(logging.Formatter("aiokafka: %(levelname)s: %(message)s"))
    logger = logging.getLogger("aiokafka")
    logger.propagate = False
    logger.handlers = [handler]
    if not verbose:  # a failed connection attempt leaves one behind for the garbage collector, which says so
        logging.getLogger("asyncio").addFilter(_unclosed_kafka_connection)


def _unclosed_kafka_connection(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Unclosed AIOKafka")


def root_group(ctx: click.Context) -> click.Group:
    """The `ptc` group itself, from within one of its commands (to see every command's options)."""
    root = ctx.find_root().command
    assert isinstance(root, click.Group)
    return root
