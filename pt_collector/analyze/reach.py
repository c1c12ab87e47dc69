"""Before the stream starts: the brokers answer, or it is said on stderr while they do not (then KafkaUnavailable)."""

from __future__ import annotations

import sys
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from ..kafka.client import KafkaUnavailable

SAY_EVERY_S = 5.0


def wait_for_brokers(settings: dict[str, str], timeout_s: float) -> None:
    """Return once the cluster (librdkafka `settings`, connection.py) answers a metadata request; say so every few
    seconds while it does not."""
    brokers = settings["bootstrap.servers"]
    admin = AdminClient({**settings, "logger": _Quiet()})
    deadline = time.monotonic() + timeout_s
    said = 0.0
    while True:
        try:
            admin.list_topics(timeout=min(1.0, max(0.2, deadline - time.monotonic())))
            if said:
                print(f"ptc analyze: Kafka at {brokers} answers", file=sys.stderr)
            return
        except KafkaException as exc:
            reason = exc.args[0].str() if exc.args else str(exc)
        if time.monotonic() >= deadline:
            raise KafkaUnavailable(f"no answer from Kafka at {brokers} within {timeout_s:g} s ({reason})")
        if time.monotonic() - said >= SAY_EVERY_S:
            print(f"ptc analyze: waiting for Kafka at {brokers} ({reason})", file=sys.stderr)
            said = time.monotonic()


class _Quiet:
    """librdkafka's own connection errors: the waiting line above says it once."""

    def log(self, *args: object, **kwargs: object) -> None:
        pass
