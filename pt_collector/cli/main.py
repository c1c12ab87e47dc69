"""The `ptc` command: thin click wrappers around the library.

Exit status: 0 success, 1 the work failed or was incomplete (a capture
file unreadable, an output that cannot be written), 2 a usage error.

Start-up stays light: a command's module (cli/NAME.py) is imported when
that command runs (or when --help, the man page, completion or a --config
file need every command's options), and each module imports its heavy
libraries (aiokafka, rich, the capture stages) where they are used.
tests/test_startup.py checks which modules a start loads.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from .. import __version__
from ..ops.config import apply as apply_settings
from ..ops.config import prepare_command
from .common import hold_standard_fds

# Every command: its name, and the module and attribute that define it (imported on first use).
COMMANDS = {
    "analyze": ("analyze", "analyze"),
    "collect": ("collect", "collect"),
    "config": ("config", "config_group"),
    "consume": ("consume", "consume"),
    "generate": ("generate", "generate"),
    "paths": ("paths", "paths"),
    "replay": ("replay", "replay"),
    "rules": ("rules", "rules_group"),
}


class PtcGroup(click.Group):
    """`ptc`: its commands loaded on first use, --config taken anywhere on the command line (before `--`), as if
    given before the command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_config(args))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f".{module}", __package__), attribute)
            prepare_command(command, CONFIG_HELP)  # PTC_* variables and --config, as on every command
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """click's, with "Did you mean ...?" chosen among every command, loaded or not."""
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:
            raise click.exceptions.NoSuchCommand(exc.command_name, possibilities=COMMANDS, ctx=ctx) from None


def hoist_config(args: list[str]) -> list[str]:
    """`--config FILE` and `--config=FILE` moved to the front, wherever they stand (until `--`)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        if arg == "--config" and i + 1 < len(args):
            front += args[i : i + 2]
            i += 2
            continue
        (front if arg.startswith("--config=") else rest).append(arg)
        i += 1
    return front + rest


def show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """`ptc --version`: the version and the engine in use (which imports the engine, so only here)."""
    if not value or ctx.resilient_parsing:
        return
    from ..pipeline.engine import engine_label

    click.echo(f"ptc, version {__version__}, {engine_label()}")
    ctx.exit()


CONFIG_HELP = (
    "Settings for the commands from a TOML file: a key per long option (tts_shift = 18), top level or in a "
    "command's table ([collect]); flags win over PTC_* variables, which win over the file. "
    "Accepted anywhere on the line."
)


@click.group(
    cls=PtcGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)  # fmt: skip
@click.option(
    "--config", "config_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path), envvar="PTC_CONFIG",
    show_envvar=True, help=CONFIG_HELP,
)  # fmt: skip
@click.option(
    "-V", "--version", is_flag=True, expose_value=False, is_eager=True, callback=show_version,
    help="Show the version and exit.",
)  # fmt: skip
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """ptc: the SRv6 Path Tracing probe collector.

    Decodes PT probes (HbH MCD stacks, SRH PT TLVs) into records
    (record schema v1) and writes them out: `ptc replay x.pcap` prints JSON
    lines, as tcpdump -r would print packets; `ptc collect -i eth1 -t
    pt-probes -b kafka1:9092` captures into Kafka.

    Every option of every command can also come from the environment,
    PTC_<OPTION> (PTC_TOPIC, PTC_TTS_SHIFT, ...), or from the --config file.
    A flag wins over the environment, the environment over the file;
    `ptc config check [COMMAND]` shows what a command would use.

    Errors go to stderr as one line, `Error: ...`. Exit status: 0 done,
    1 the work failed or was incomplete, 2 a usage error. Shell completion:
    eval "$(_PTC_COMPLETE=bash_source ptc)" (zsh_source, fish_source).
    """
    hold_standard_fds()
    if ctx.invoked_subcommand not in ("config", "rules") and not ctx.resilient_parsing:  # they read the file
        apply_settings(ctx, config_file)


if __name__ == "__main__":  # pragma: no cover
    main()
