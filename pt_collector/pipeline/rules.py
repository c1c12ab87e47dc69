"""Flow rules: which function each probe gets and which topic its output goes to (pure).

The config file's `[[rules]]` array, in order: the first rule whose every
match key holds for a probe decides; a rule without match keys matches
every probe; a probe no rule matches gets DEFAULT, `pass` to the main
topic. Parsing checks every key and value and raises RuleError naming the
rule and the key. docs/rules.md is the user's side of this.
"""

from __future__ import annotations

import difflib
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from typing import Any, ClassVar

from ..codec.record import Record

MAX_SEEN = 65536  # addresses (or SID lists) remembered per prefix set before it starts afresh
SESSION_ID_MAX = 0xFFFF
IF_ID_MAX = 0xFFF
DEFAULT_INTERVAL_MS = 1000
DEFAULT_GRACE_MS = 1000
DEFAULT_BOUNDS_US = (50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000)
US = 1000


class RuleError(ValueError):
    """A rule in the config file that is not valid: one line naming the rule and the key."""


# ---------------------------------------------------------------- matching


class Prefixes:
    """Any of some IPv6 prefixes; whether an address (text) is in one is worked out once per address."""

    __slots__ = ("_seen", "_sids_seen", "networks")

    def __init__(self, networks: Iterable[IPv6Network]) -> None:
        self.networks = tuple(networks)
        self._seen: dict[str, bool] = {}
        self._sids_seen: dict[tuple[str, ...], bool] = {}

    def __contains__(self, addr: str) -> bool:
        hit = self._seen.get(addr)
        if hit is None:
            if len(self._seen) >= MAX_SEEN:
                self._seen.clear()
            address = IPv6Address(addr)
            hit = self._seen[addr] = any(address in network for network in self.networks)
        return hit

    def any_of(self, sids: tuple[str, ...]) -> bool:
        """Whether any of a SID list is in one of the prefixes (a layout's SID list is one tuple: cached)."""
        hit = self._sids_seen.get(sids)
        if hit is None:
            if len(self._sids_seen) >= MAX_SEEN:
                self._sids_seen.clear()
            hit = self._sids_seen[sids] = any(sid in self for sid in sids)
        return hit

    def __str__(self) -> str:
        return ", ".join(map(str, self.networks))


@dataclass(frozen=True, slots=True)
class Match:
    """A rule's match keys; None is "any". Every key given must hold."""

    src: Prefixes | None = None  # the source node's address
    sink: Prefixes | None = None  # the sink node's address (a bare probe has none: no match)
    dst: Prefixes | None = None  # the inner destination address
    segment: Prefixes | None = None  # the destination or any SID of the probe's SRH
    session_id: tuple[int, int] | None = None  # first, last (inclusive)
    src_if_id: frozenset[int] | None = None  # the source's outgoing interface id

    def __call__(self, record: Record) -> bool:
        if self.session_id is not None and not self.session_id[0] <= record.session_id <= self.session_id[1]:
            return False
        if self.src_if_id is not None and record.src.if_id not in self.src_if_id:
            return False
        if self.src is not None and record.src.addr not in self.src:
            return False
        if self.sink is not None and (record.sink is None or record.sink.addr not in self.sink):
            return False
        if self.dst is not None and record.dst not in self.dst:
            return False
        return self.segment is None or record.dst in self.segment or self.segment.any_of(record.segments)

    def settings(self) -> dict[str, Any]:
        """The keys given, as the config file would hold them (normalised)."""
        found: dict[str, Any] = {}
        for key in ("src", "sink", "dst", "segment"):
            prefixes = getattr(self, key)
            if prefixes is not None:
                found[key] = [str(network) for network in prefixes.networks]
        if self.session_id is not None:
            first, last = self.session_id
            found["session_id"] = first if first == last else [first, last]
        if self.src_if_id is not None:
            found["src_if_id"] = sorted(self.src_if_id)
        return found


# ---------------------------------------------------------------- functions


@dataclass(frozen=True, slots=True)
class Pass:
    """The probe's record goes to the topic as it is."""

    name: ClassVar[str] = "pass"

    def settings(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class Sample:
    """1 in `one_in` probes of each session: those whose sequence number is a multiple of `one_in`.

    Decided by the probe alone, so every collector of a fleet keeps the same
    ones; over any `one_in` consecutive sequence numbers exactly one is kept.
    """

    name: ClassVar[str] = "sample"
    one_in: int

    def keeps(self, record: Record) -> bool:
        return record.sequence % self.one_in == 0

    def settings(self) -> dict[str, Any]:
        return {"one_in": self.one_in}


@dataclass(frozen=True, slots=True)
class HistogramSpec:
    """Per path and interval, delay histograms (path_histogram.py) instead of the records."""

    name: ClassVar[str] = "histogram"
    interval_ms: int = DEFAULT_INTERVAL_MS
    bounds_us: tuple[int, ...] = DEFAULT_BOUNDS_US
    hop_bounds_us: tuple[int, ...] = DEFAULT_BOUNDS_US
    grace_ms: int = DEFAULT_GRACE_MS

    @property
    def bounds_ns(self) -> tuple[int, ...]:
        return tuple(bound * US for bound in self.bounds_us)

    @property
    def hop_bounds_ns(self) -> tuple[int, ...]:
        return tuple(bound * US for bound in self.hop_bounds_us)

    def settings(self) -> dict[str, Any]:
        return {
            "interval_ms": self.interval_ms,
            "bounds_us": list(self.bounds_us),
            "hop_bounds_us": list(self.hop_bounds_us),
            "grace_ms": self.grace_ms,
        }


@dataclass(frozen=True, slots=True)
class Drop:
    """Counted, not sent."""

    name: ClassVar[str] = "drop"

    def settings(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True, slots=True)
class Raw:
    """The probe's frame, one Kafka message each (key: capture time in us, 8 bytes big-endian)."""

    name: ClassVar[str] = "raw"

    def settings(self) -> dict[str, Any]:
        return {}


Function = Pass | Sample | HistogramSpec | Drop | Raw


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: where it stands (1 = first; 0 is the default), what it matches, its function and topic."""

    index: int
    name: str
    match: Match
    function: Function
    topic: str | None = None  # None: the main topic

    @property
    def label(self) -> str:
        """How messages name the rule: `rule 2 (lab)`, `rule 3`, `default`."""
        if self.index == 0:
            return "default"
        return f"rule {self.index} ({self.name})" if self.name else f"rule {self.index}"

    @property
    def key(self) -> str:
        """The rule's name in histogram records: its name, else its place (`2`)."""
        return self.name or str(self.index)

    def settings(self) -> dict[str, Any]:
        """The rule as the config file would hold it, normalised (`ptc config check`)."""
        found: dict[str, Any] = {"name": self.name} if self.name else {}
        found |= self.match.settings()
        found["function"] = self.function.name
        if self.topic is not None:
            found["topic"] = self.topic
        return found | self.function.settings()


DEFAULT = Rule(0, "", Match(), Pass())


@dataclass(frozen=True)
class Ruleset:
    """Rules in order; `match` gives the first that holds, or DEFAULT."""

    rules: tuple[Rule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, record: Record) -> Rule:
        for rule in self.rules:
            if rule.match(record):
                return rule
        return DEFAULT


# ---------------------------------------------------------------- parsing


MATCH_KEYS = ("src", "sink", "dst", "segment", "session_id", "src_if_id")
FUNCTIONS: dict[str, type[Function]] = {f.name: f for f in (Pass, Sample, HistogramSpec, Drop, Raw)}
FUNCTION_KEYS = {
    "pass": (),
    "sample": ("one_in",),
    "histogram": ("interval_ms", "bounds_us", "hop_bounds_us", "grace_ms"),
    "drop": (),
    "raw": (),
}
KEYS = ("name", *MATCH_KEYS, "function", "topic", *(key for keys in FUNCTION_KEYS.values() for key in keys))


def parse_rules(tables: object) -> Ruleset:
    """The `[[rules]]` array of the config file, checked; RuleError (one line) for the first invalid key."""
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise RuleError("rules: an array of tables, [[rules]]")
    return Ruleset(tuple(parse_rule(index, table) for index, table in enumerate(tables, start=1)))


def parse_rule(index: int, table: Mapping[str, Any]) -> Rule:
    name = table.get("name", "")
    where = f"rule {index}"
    if not isinstance(name, str):
        raise RuleError(f"{where}: name: {_toml(name)} is not a string")
    where = f"rule {index} ({name})" if name else where
    for key in table:
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            raise RuleError(f"{where}: {key}: unknown key" + (f"; did you mean {close[0]}?" if close else ""))
    function = table.get("function")
    if function not in FUNCTIONS:
        shown = "missing" if function is None else f"{_toml(function)} is not"
        raise RuleError(f"{where}: function: {shown} one of {', '.join(FUNCTIONS)}")
    for key in table:
        owner = next((f for f, keys in FUNCTION_KEYS.items() if key in keys), function)
        if owner != function:
            raise RuleError(f'{where}: {key}: only for function = "{owner}", not "{function}"')
    topic = table.get("topic")
    if topic is not None and (not isinstance(topic, str) or not topic):
        raise RuleError(f"{where}: topic: {_toml(topic)} is not a topic name")
    return Rule(index, name, _match(where, table), _function(where, function, table), topic)


def _match(where: str, table: Mapping[str, Any]) -> Match:
    found: dict[str, Any] = {}
    for key in ("src", "sink", "dst", "segment"):
        if key in table:
            found[key] = Prefixes(_prefixes(f"{where}: {key}", table[key]))
    if "session_id" in table:
        found["session_id"] = _range(f"{where}: session_id", table["session_id"], SESSION_ID_MAX)
    if "src_if_id" in table:
        found["src_if_id"] = _ids(f"{where}: src_if_id", table["src_if_id"], IF_ID_MAX)
    return Match(**found)


def _function(where: str, name: str, table: Mapping[str, Any]) -> Function:
    if name == "sample":
        if "one_in" not in table:
            raise RuleError(f"{where}: one_in: missing (sample keeps 1 in one_in probes of each session)")
        return Sample(_int(f"{where}: one_in", table["one_in"], 1, SESSION_ID_MAX + 1))
    if name == "histogram":
        options: dict[str, Any] = {}
        for key in ("interval_ms", "grace_ms"):
            if key in table:
                options[key] = _int(f"{where}: {key}", table[key], 1 if key == "interval_ms" else 0, 86_400_000)
        for key in ("bounds_us", "hop_bounds_us"):
            if key in table:
                options[key] = _bounds(f"{where}: {key}", table[key])
        if "bounds_us" in options and "hop_bounds_us" not in options:
            options["hop_bounds_us"] = options["bounds_us"]
        return HistogramSpec(**options)
    return FUNCTIONS[name]()  # type: ignore[call-arg]


def _prefixes(where: str, value: object) -> list[IPv6Network]:
    texts = value if isinstance(value, list) else [value]
    if not texts or not all(isinstance(text, str) for text in texts):
        raise RuleError(f"{where}: {_toml(value)} is not an IPv6 prefix or a list of them")
    networks = []
    for text in texts:
        try:
            networks.append(IPv6Network(text))
        except ValueError as exc:
            raise RuleError(f"{where}: not an IPv6 prefix: {exc}") from None
    return networks


def _int(where: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleError(f"{where}: {_toml(value)} is not an integer")
    if not low <= value <= high:
        raise RuleError(f"{where}: {value} is not in the range {low}..{high}")
    return value


def _range(where: str, value: object, high: int) -> tuple[int, int]:
    """One id, or [first, last]."""
    if isinstance(value, list):
        if len(value) != 2:
            raise RuleError(f"{where}: {_toml(value)} is not one id or a range [first, last]")
        first, last = (_int(where, v, 0, high) for v in value)
        if first > last:
            raise RuleError(f"{where}: [{first}, {last}] is an empty range (first > last)")
        return first, last
    single = _int(where, value, 0, high)
    return single, single


def _ids(where: str, value: object, high: int) -> frozenset[int]:
    """One id, or a list of them."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise RuleError(f"{where}: [] holds no id")
    return frozenset(_int(where, v, 0, high) for v in values)


def _bounds(where: str, value: object) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise RuleError(f"{where}: {_toml(value)} is not a list of bucket bounds (us)")
    bounds = tuple(_int(where, v, 1, 3_600_000_000) for v in value)
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise RuleError(f"{where}: {_toml(value)} is not increasing")
    return bounds


def _toml(value: object) -> str:
    """A value as the file wrote it: JSON spells TOML's strings, numbers, booleans and arrays the same way."""
    return json.dumps(value, ensure_ascii=False, default=str)


def topics(rules: Sequence[Rule]) -> list[str]:
    """The topics the rules name, in order, once each."""
    return list(dict.fromkeys(rule.topic for rule in rules if rule.topic is not None))
