"""The Kafka connection of `ptc analyze`: the --security-protocol family (kafka.client.Security, the options of
cli/kafka_options.py) as librdkafka settings, for Quix Streams' clients and the start-up wait (reach.py)."""

from __future__ import annotations

from ..kafka.client import Cluster


def librdkafka_settings(cluster: Cluster) -> dict[str, str]:
    """bootstrap.servers, security.protocol, and the SASL and TLS settings it needs; KafkaConfigError (one line)
    when they do not fit together (Security.check, as for the other commands)."""
    security = cluster.security
    security.check()
    settings = {"bootstrap.servers": cluster.brokers, "security.protocol": security.protocol}
    if security.uses_sasl:
        settings["sasl.mechanism"] = security.sasl_mechanism
        settings["sasl.username"] = security.sasl_username or ""
        settings["sasl.password"] = security.sasl_password or ""
    if security.uses_ssl:
        files = {
            "ssl.ca.location": security.ssl_cafile, "ssl.certificate.location": security.ssl_certfile,
            "ssl.key.location": security.ssl_keyfile, "ssl.key.password": security.ssl_password,
        }  # fmt: skip
        settings.update({key: value for key, value in files.items() if value is not None})
        settings["ssl.endpoint.identification.algorithm"] = "https" if security.ssl_check_hostname else "none"
    return settings
