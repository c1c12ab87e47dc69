"""`ptc consume`: a topic's records back as JSON lines."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from .common import (
    EXIT_FAILED,
    Failed,
    kafka_client_log,
    kafka_usage,
    open_output,
    output_name,
    run_async,
    say_error,
)
from .kafka_options import (
    cluster_from,
    cluster_options,
    topic_option,
)

if TYPE_CHECKING:  # the Kafka client (aiokafka) is imported when the command runs, not for --help
    from ..codec.record import Record
    from ..kafka.client import ConsumeStats
    from ..pipeline.sinks import LineWriter


@click.command(short_help="Read ptc records back from a Kafka topic as JSON lines (like kcat -C).")
@topic_option("read")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message kept [default: only new ones].")
@click.option(
    "-c", "--count", "--max", "max_records", type=click.IntRange(min=1), metavar="N",
    help="Stop after N records (kcat -c).",
)  # fmt: skip
@click.option(
    "-o", "--output", default="-", show_default=True, metavar="FILE",
    help="Write the records as JSON lines to FILE ('-' for stdout).",
)  # fmt: skip
@click.option(
    "--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
    help="Stop once no message came for SECONDS [default: wait for ever].",
)  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="No summary on stderr.")
@cluster_options
def consume(
    topic: str,
    from_beginning: bool,
    max_records: int | None,
    output: str,
    timeout: float | None,
    quiet: bool,
    **kafka: Any,
) -> None:
    """Read ptc messages from a Kafka topic; print one record per line.

    Messages in either format (json, msgpack) come out as JSON lines in the
    record schema, in order within each partition (so per source node).
    Every partition is read, with no consumer group: nothing is committed.
    A message that is not a ptc batch is named on stderr and skipped.

    It runs until --count records, until --timeout seconds pass without a
    message, or until interrupted (Ctrl-C); a summary goes to stderr.

    Exit status 0 when it stopped there; 1 when the brokers could not be
    reached, a message was not a ptc batch, or it stopped before --count
    records; 2 for a usage error.
    """
    from ..codec.record import to_json_lines
    from ..kafka.client import ConsumeStats, KafkaUnavailable
    from ..kafka.client import consume as consume_records
    from ..pipeline.sinks import LineWriter, OutputError

    with kafka_usage():
        cluster = cluster_from(kafka)
        cluster.client_options()
    kafka_client_log(kafka["verbose"])
    with open_output(output) as stream:
        lines = LineWriter(stream, output_name(output))

        def emit(records: list[Record]) -> None:
            lines.write(to_json_lines(records), len(records))

        stats = ConsumeStats()
        reading = consume_records(
            cluster, topic, emit, from_beginning=from_beginning, max_records=max_records, idle_timeout_s=timeout,
            stats=stats,
        )  # fmt: skip
        stopped_by = "--timeout"
        try:
            run_async(reading)
        except KafkaUnavailable as exc:
            raise Failed(str(exc)) from None
        except OutputError as exc:
            if exc.reader_gone:
                sys.stderr.close()  # the reader went away (| head): nothing left to report
                raise SystemExit(0) from None
            pass  # reported with the counts below
        except KeyboardInterrupt:  # the way to stop it without --max or --timeout
            stopped_by = "the interrupt"
    _consume_report(stats, lines, max_records, stopped_by, quiet)


def _consume_report(
    stats: ConsumeStats, lines: LineWriter, max_records: int | None, stopped_by: str, quiet: bool
) -> None:
    if not quiet:
        not_written = f" ({lines.failed:,} not written)" if lines.failed else ""
        click.echo(f"consumed {stats.records:,} records from {stats.messages:,} messages{not_written}", err=True)
    for bad in stats.bad:
        say_error(f"{bad}")
    if lines.error:
        say_error(f"{lines.error}: consume stopped, {lines.failed:,} records not written")
    short = max_records is not None and stats.records < max_records
    if short and not lines.error:
        say_error(f"{stats.records:,} of {max_records:,} records before {stopped_by}")
    if short or stats.bad or lines.error:
        raise SystemExit(EXIT_FAILED)
