"""The choices and defaults of the Kafka settings, in a module of their own without aiokafka or msgspec.

Every `ptc` start builds the commands' click options from them (cli/kafka_options.py), most of which never
reach Kafka: they stay cheap to import. client.py, message.py and sink.py check their settings against them.
"""

from __future__ import annotations

DEFAULT_BROKERS = "127.0.0.1:9092"
DEFAULT_TOPIC = "pt-probes"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
DEFAULT_COMPRESSION = "snappy"  # the fastest end to end in bench/bench_kafka.py (docs/benchmarks.md, Kafka)
ACKS = ("all", "1", "0")
FORMATS = ("json", "msgpack")  # a message's records: JSON lines or one msgpack array
WHEN_FULL = ("block", "drop")  # at --max-pending: wait, or drop the newest records and count them
