"""The `ptc` command: thin click wrappers around the library.

Exit status: 0 success, 1 the work failed or was incomplete (a capture
file unreadable, an output that cannot be written), 2 a usage error.
"""

from __future__ import annotations

from pathlib import Path

import click

from .. import __version__
from ..ops.config import add_config_help, expose_environment
from ..ops.config import apply as apply_settings
from ..pipeline.engine import engine_label
from .analyze import analyze
from .collect import collect
from .common import hold_standard_fds
from .config import config_group
from .consume import consume
from .generate import generate
from .paths import paths
from .replay import replay
from .rules import rules_group


class PtcGroup(click.Group):
    """`ptc`: --config is taken anywhere on the command line (before `--`), as if given before the command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_config(args))


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
@click.version_option(
    __version__, "-V", "--version", prog_name="ptc", message=f"%(prog)s, version %(version)s, {engine_label()}"
)
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


main.add_command(analyze)
main.add_command(collect)
main.add_command(config_group)
main.add_command(consume)
main.add_command(generate)
main.add_command(paths)
main.add_command(replay)
main.add_command(rules_group)

expose_environment(main)
add_config_help(main, CONFIG_HELP)

if __name__ == "__main__":  # pragma: no cover
    main()
