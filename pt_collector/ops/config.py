"""Settings from a TOML file and the environment, beneath the command line.

Precedence, highest first: a flag on the command line, the environment
(PTC_<KEY>), the config file (a command's table over the top level), the
option's built-in default. This is click's own order: every option gets an
envvar, and the file becomes the invoked command's default_map. Before
click sees them, every value from the file and the environment goes
through the option's own click type and callback here, so an invalid one
is a single line naming its key and where it came from (exit status 2).
docs/configuration.md is the user's side of this.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv6Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..codec.shift_infer import AUTO
from ..codec.tts import MAX_SHIFT

if TYPE_CHECKING:  # imported where used: every `ptc` start (a --help too) imports this module
    from ..pipeline.engine import Engine
    from ..pipeline.rules import Ruleset
    from ..pipeline.shift_watch import Shift

ENV_PREFIX = "PTC_"
SHIFTS_TABLE = "tts_shift_by_source"
RULES_KEY = "rules"  # [[rules]]: flow rules (rules.py, docs/rules.md)
SECRET = re.compile(r"password|secret|token|passphrase|credential")
HIDDEN = "***"
DEFAULT, FILE, ENVIRONMENT = "default", "file", "environment"  # where a setting came from, lowest first
_META_SHIFTS = "pt_collector.tts_shift_by_source"  # ctx.meta is shared by the group and its subcommands
_META_RULES = "pt_collector.pipeline.rules"


class TtsShift(click.ParamType):
    """--tts-shift: a shift 0..24, or `auto` (learnt per source from the probes)."""

    name = "0..24|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SHIFT:
            return value
        text = str(value).strip().lower()
        if text == AUTO:
            return AUTO
        if text.isdigit() and 0 <= int(text) <= MAX_SHIFT:
            return int(text)
        self.fail(f"{value} is not a TTS shift 0..{MAX_SHIFT} or {AUTO}", param, ctx)


TTS_SHIFT = TtsShift()


class ConfigError(click.ClickException):
    """A setting from the file or the environment is invalid: one line, exit status 2 like a usage error."""

    exit_code = 2


@dataclass(frozen=True)
class Setting:
    """One option's effective value, its layer, and where exactly: `default`, PTC_KEY, or `FILE: [table.]key`."""

    value: Any
    layer: str
    origin: str


def _no_rules() -> Ruleset:
    """An empty Ruleset (pipeline.rules imported only now: `ptc --help` has no use for it)."""
    from ..pipeline.rules import Ruleset

    return Ruleset()


@dataclass(frozen=True)
class Config:
    """A read and checked config file, or none (an empty table)."""

    name: str  # the file as given, for messages
    table: Mapping[str, Any]
    shift_by_source: Mapping[IPv6Network, int | str]  # a shift 0..24, or "auto"
    rules: Ruleset = field(default_factory=_no_rules)


def is_secret(key: str) -> bool:
    return SECRET.search(key) is not None


# ---------------------------------------------------------------- options and their keys


def option_keys(command: click.Command) -> dict[str, click.Option]:
    """The command's options by setting key: the long name with '_' for '-' (--tts-shift: tts_shift)."""
    keys = {}
    for param in command.params:
        long_name = next((opt for opt in param.opts if opt.startswith("--")), None)
        if isinstance(param, click.Option) and param.expose_value and long_name:
            keys[long_name[2:].replace("-", "_")] = param
    return keys


def subcommands(group: click.Group) -> dict[str, click.Command]:
    """The group's commands by name, each loaded (`ptc` imports a command's module on first use)."""
    ctx = click.Context(group)
    loaded = ((name, group.get_command(ctx, name)) for name in group.list_commands(ctx))
    return {name: command for name, command in loaded if command is not None}


def configurable(group: click.Group) -> dict[str, click.Command]:
    """The commands whose options settings can set (not groups such as `config`)."""
    return {name: cmd for name, cmd in subcommands(group).items() if not isinstance(cmd, click.Group)}


def commands_of(group: click.Group) -> dict[str, click.Command]:
    """Every command under `group`, groups' subcommands too, by their path (`rules test`)."""
    found: dict[str, click.Command] = {}
    for name, command in subcommands(group).items():
        if isinstance(command, click.Group):
            found.update({f"{name} {sub}": cmd for sub, cmd in commands_of(command).items()})
        else:
            found[name] = command
    return found


def prepare_command(command: click.Command, help_text: str) -> None:
    """What every `ptc` command (and subcommand) gets as it is loaded: each option its variable, PTC_<KEY>, the
    same one in each command that has it, shown in --help ([env var: PTC_TOPIC]; click names it in an error about
    the option too); and --config in its --help, which the group takes from anywhere on the line, so the command
    itself never sees it (expose_value=False)."""
    commands = commands_of(command).values() if isinstance(command, click.Group) else [command]
    for each in commands:
        for key, option in option_keys(each).items():
            if not option.envvar:
                option.envvar = ENV_PREFIX + key.upper()
            option.show_envvar = True
        if not any("--config" in param.opts for param in each.params):
            each.params.append(
                click.Option(["--config"], metavar="FILE", expose_value=False, help=help_text, envvar="PTC_CONFIG",
                             show_envvar=True)
            )  # fmt: skip


# ---------------------------------------------------------------- the file


def read(path: Path | None) -> Config:
    """The config file at `path` (None: no file), its keys checked; values are checked per command."""
    if path is None:
        return Config("", {}, {})
    import tomllib

    name = str(path)
    try:
        with open(path, "rb") as stream:
            table = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 text
        line = exc.object.count(b"\n", 0, exc.start) + 1
        where = f"byte 0x{exc.object[exc.start]:02x} at offset {exc.start} (line {line})"
        raise ConfigError(f"{name}: not valid TOML: not UTF-8 text, {where}") from None
    return Config(name, table, _shifts(name, table.get(SHIFTS_TABLE, {})), _rules(name, table.get(RULES_KEY, [])))


def check_keys(config: Config, commands: Mapping[str, click.Command]) -> None:
    """Every key names a setting of some command, a command's table, or the per-source shifts (typos fail)."""
    everywhere = {key for command in commands.values() for key in option_keys(command)}
    _check_rule_topics(config, commands)
    for key, value in config.table.items():
        if key in (SHIFTS_TABLE, RULES_KEY):
            continue
        if key not in commands:
            if key not in everywhere:
                raise ConfigError(f"{config.name}: {key}: unknown key{_did_you_mean(key, everywhere, commands)}")
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{config.name}: {key}: the settings of `ptc {key}` are a table, [{key}]")
        known = option_keys(commands[key])
        for sub in value:
            if sub not in known:
                hint = _did_you_mean(sub, known)
                raise ConfigError(f"{config.name}: {key}.{sub}: unknown key (ptc {key} has no such option){hint}")


def _did_you_mean(key: str, *choices: Mapping[str, Any] | set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, [c for group in choices for c in group], n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _shifts(name: str, table: object) -> dict[IPv6Network, int | str]:
    """[tts_shift_by_source]: "prefix" = shift, or "prefix" = "auto"."""
    if not isinstance(table, dict):
        raise ConfigError(f'{name}: {SHIFTS_TABLE}: a table of "prefix" = shift, [{SHIFTS_TABLE}]')
    shifts: dict[IPv6Network, int | str] = {}
    for prefix, shift in table.items():
        where = f'{name}: {SHIFTS_TABLE}."{prefix}"'
        try:
            network = IPv6Network(prefix)
        except ValueError as exc:
            raise ConfigError(f"{where}: not an IPv6 prefix: {exc}") from None
        if shift != AUTO and (isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= MAX_SHIFT):
            raise ConfigError(f'{where}: {_toml(shift)} is not a TTS shift 0..{MAX_SHIFT} or "{AUTO}"')
        if network in shifts:
            raise ConfigError(f"{where}: the same prefix as another key, {network}")
        shifts[network] = shift
    return shifts


def _rules(name: str, tables: object) -> Ruleset:
    """[[rules]], each key checked (a topic's name is checked with the --topic option, in check_keys)."""
    from ..pipeline.rules import RuleError, parse_rules

    try:
        return parse_rules(tables)
    except RuleError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _check_rule_topics(config: Config, commands: Mapping[str, click.Command]) -> None:
    """A rule's topic goes through the same check as --topic."""
    found = ((name, option_keys(command).get("topic")) for name, command in commands.items())
    name, option = next(((name, option) for name, option in found if option is not None), ("", None))
    if option is None:
        return
    ctx = click.Context(commands[name], info_name=name)
    for rule in config.rules:
        if rule.topic is not None:
            _checked(ctx, option, "topic", rule.topic, f"{config.name}: {rule.label}: topic", from_file=True)


# ---------------------------------------------------------------- one command's settings


def settings(name: str, command: click.Command, config: Config, environ: bool = True) -> dict[str, Setting]:
    """The command's options that the file or (with `environ`) the environment sets, by key, checked."""
    ctx = click.Context(command, info_name=name)
    found = {}
    for key, option in option_keys(command).items():
        for layer, origin, raw in _layers(name, key, option, config, ctx, environ):
            found[key] = Setting(_checked(ctx, option, key, raw, origin, layer == FILE), layer, origin)
    return found


def _layers(
    name: str, key: str, option: click.Option, config: Config, ctx: click.Context, environ: bool
) -> Iterator[tuple[str, Any, bool]]:
    """(layer, origin, raw value) for one option, lowest precedence first."""
    if key in config.table:
        yield FILE, f"{config.name}: {key}", config.table[key]
    if key in config.table.get(name, {}):
        yield FILE, f"{config.name}: {name}.{key}", config.table[name][key]
    raw = option.resolve_envvar_value(ctx) if environ else None  # click's own reading: empty means unset
    if raw is not None:
        yield ENVIRONMENT, _envvar_of(option), raw


def _envvar_of(option: click.Option) -> str:
    """The variable that gave the value (an option may list several; the first set one counts)."""
    names = [option.envvar] if isinstance(option.envvar, str) else list(option.envvar or ())
    return next(name for name in names if os.environ.get(name))


def _checked(ctx: click.Context, option: click.Option, key: str, raw: Any, origin: str, from_file: bool) -> Any:
    """The value as the option's click type and callback make it, or ConfigError naming `origin`."""
    if from_file:
        _check_toml_kind(option, key, raw, origin)
    try:
        return option.process_value(ctx, raw)
    except click.BadParameter as exc:
        reason = "not a valid value" if is_secret(key) else exc.message.rstrip(".")
        raise ConfigError(f"{origin}: {reason}") from None


def _check_toml_kind(option: click.Option, key: str, raw: Any, origin: str) -> None:
    """TOML has types: 1.5 for an integer or "yes" for a flag is a mistake, not something to coerce."""
    kind = option.type
    if isinstance(kind, TtsShift):
        ok, what = isinstance(raw, int | str) and not isinstance(raw, bool), f'a shift 0..{MAX_SHIFT} or "{AUTO}"'
    elif isinstance(kind, click.types.BoolParamType):
        ok, what = isinstance(raw, bool), "true or false"
    elif isinstance(kind, click.types.IntParamType):
        ok, what = isinstance(raw, int) and not isinstance(raw, bool), "an integer"
    elif isinstance(kind, click.types.FloatParamType):
        ok, what = isinstance(raw, int | float) and not isinstance(raw, bool), "a number"
    else:
        ok, what = isinstance(raw, str), "a string"
    if not ok:
        shown = "the value" if is_secret(key) else _toml(raw)
        raise ConfigError(f"{origin}: {shown} is not {what}")


# ---------------------------------------------------------------- the ptc group's side


def apply(ctx: click.Context, path: Path | None) -> None:
    """Check the file and make it, and the environment, the invoked command's defaults (flags still win).

    The whole file is checked whatever the command, the environment only
    for the command that runs (PTC_WORKERS means nothing to replay). So
    only a file that sets something loads every command (their options);
    without one, the command that runs is the only one imported.
    """
    assert isinstance(ctx.command, click.Group)
    config = read(path)
    if config.table:
        commands = configurable(ctx.command)
    else:
        name = ctx.invoked_subcommand or ""
        invoked = ctx.command.get_command(ctx, name)
        commands = {name: invoked} if invoked is not None and not isinstance(invoked, click.Group) else {}
    check_keys(config, commands)
    for name, command in commands.items():
        found = settings(name, command, config, environ=name == ctx.invoked_subcommand)
        if name == ctx.invoked_subcommand:
            # click reads the environment itself, above default_map: the file alone goes there
            options = option_keys(command)
            from_file = {options[key].name: s.value for key, s in found.items() if s.layer == FILE}
            default_map = dict(ctx.default_map or {})
            ctx.default_map = {**default_map, name: {**default_map.get(name, {}), **from_file}}
    ctx.meta[_META_SHIFTS] = config.shift_by_source
    ctx.meta[_META_RULES] = config.rules


def rules_for() -> Ruleset:
    """The running command's flow rules: the config file's [[rules]], or none."""
    ctx = click.get_current_context(silent=True)
    rules = ctx.meta.get(_META_RULES) if ctx is not None else None
    return rules if rules is not None else _no_rules()


def engine_for(
    tts_shift: Shift, shift_by_source: Mapping[IPv6Network, Shift] | None = None, fmt: str = "json"
) -> Engine:
    """The running command's engine (PTC_ENGINE, else native where built), decoding with this TTS shift and these
    per-source shifts (by default the config file's), encoding to `fmt` (Kafka's --format; JSON lines for a
    file); a PTC_ENGINE that names no engine is a usage error.

    A shift given (or `auto`) is checked against the probes (`auto`: learnt), in lines on stderr; the sources
    still learning when the command ends get their verdict then.
    """
    from ..pipeline.engine import EngineError
    from ..pipeline.shift_watch import ShiftWatchingEngine, watching

    ctx = click.get_current_context(silent=True)
    if shift_by_source is None:
        shift_by_source = ctx.meta.get(_META_SHIFTS) if ctx is not None else None
    try:
        engine = watching(tts_shift, shift_by_source, _say_shift, fmt)
    except EngineError as exc:
        raise click.UsageError(str(exc)) from None
    if isinstance(engine, ShiftWatchingEngine) and ctx is not None:
        ctx.call_on_close(engine.close)
    return engine


def _say_shift(line: str) -> None:
    """A warning in the form every ptc warning takes (`Warning: ...`), what was learnt as `ptc: ...`."""
    warning = line.removeprefix("warning: ")
    click.echo(f"Warning: {warning}" if warning != line else f"ptc: {line}", err=True)


# ---------------------------------------------------------------- `ptc config check`


def effective(group: click.Group, path: Path | None) -> tuple[Config, dict[str, dict[str, Setting | None]]]:
    """Every command's every option: its setting (file and environment applied), its default, or None (unset)."""
    commands = configurable(group)
    config = read(path)
    check_keys(config, commands)
    table = {}
    for name, command in commands.items():
        found = settings(name, command, config)
        ctx = click.Context(command, info_name=name)
        table[name] = {key: found.get(key) or _default(option, ctx) for key, option in option_keys(command).items()}
    return config, table


def _default(option: click.Option, ctx: click.Context) -> Setting | None:
    value = option.get_default(ctx)
    plain = isinstance(value, str | int | float | bool | Path)  # click's "no default" is a sentinel
    return Setting(value, DEFAULT, DEFAULT) if plain else None


def render(config: Config, table: Mapping[str, Mapping[str, Setting | None]]) -> str:
    """The effective settings as TOML, each value's origin in a comment; secrets as ***."""
    source = f"{config.name} is valid" if config.name else "no config file"
    lines = [f"# {source}; the effective settings (PTC_* variables applied; flags still win)"]
    for name, options in table.items():
        lines += ["", f"[{name}]"]
        for key, setting in options.items():
            if setting is None:
                lines.append(f"# {key}: not set")
                continue
            value = HIDDEN if is_secret(key) else setting.value
            lines.append(f"{f'{key} = {_toml(value)}':<44} # {setting.origin}")
    if config.shift_by_source:
        lines += ["", f"[{SHIFTS_TABLE}]  # the longest prefix holding the source wins, else tts_shift"]
        by_length = sorted(config.shift_by_source.items(), key=lambda entry: -entry[0].prefixlen)
        lines += [f'"{prefix}" = {_toml(shift)}' for prefix, shift in by_length]
    if config.rules:
        lines += ["", "# [[rules]]: the first rule a probe matches decides; no match: pass to the main topic"]
        for rule in config.rules:
            lines += ["", f"[[rules]]  # {rule.label}"]
            lines += [f"{key} = {_toml(value)}" for key, value in rule.settings().items()]
    return "\n".join(lines) + "\n"


def exposed_secrets(config: Config) -> list[str]:
    """The secret keys the file holds, when other users may read it (the warning of `ptc config check`)."""
    if not config.name or not Path(config.name).stat().st_mode & 0o077:
        return []
    keys = [key for key in config.table if is_secret(key)]
    keys += [f"{t}.{key}" for t, sub in config.table.items() if isinstance(sub, dict) for key in sub if is_secret(key)]
    return keys


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)  # an array of strings or integers: JSON's is TOML's
    return repr(value)
