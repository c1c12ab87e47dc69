"""ptc: the SRv6 Path Tracing probe collector.

capture (pcap, socket) -> decode (pure) -> batch -> sink (file, Kafka).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .codec.decode import DecodeError, Decoder
    from .codec.record import Hop, Node, Record
    from .kafka.message import MessageError, decode_message

__version__ = "0.1.0"

__all__ = ["DecodeError", "Decoder", "Hop", "MessageError", "Node", "Record", "__version__", "decode_message"]

# The library API, imported on first use: `import pt_collector.cli.main` (every `ptc` start) stays light.
_LAZY = {
    "DecodeError": ".codec.decode",
    "Decoder": ".codec.decode",
    "Hop": ".codec.record",
    "Node": ".codec.record",
    "Record": ".codec.record",
    "MessageError": ".kafka.message",
    "decode_message": ".kafka.message",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
