"""ptc: the SRv6 Path Tracing probe collector.

capture (pcap, socket) -> decode (pure) -> batch -> sink (file, Kafka).
"""

from .codec.decode import DecodeError, Decoder
from .codec.record import Hop, Node, Record
from .kafka.message import MessageError, decode_message

__version__ = "0.1.0"

__all__ = ["DecodeError", "Decoder", "Hop", "MessageError", "Node", "Record", "__version__", "decode_message"]
