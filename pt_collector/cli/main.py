"""The `ptc` command: thin click wrappers around the library.

Exit status: 0 success, 1 the work failed or was incomplete (a capture
file unreadable, an output that cannot be written), 2 a usage error.
"""

from __future__ import annotations

from pathlib import Path

import click

from .. import __version__
from ..ops.config import apply as apply_settings
from ..ops.config import expose_environment
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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config", "config_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path), envvar="PTC_CONFIG",
    show_envvar=True, help="Settings for the commands from a TOML file (docs/configuration.md).",
)  # fmt: skip
@click.version_option(__version__, prog_name="ptc", message=f"%(prog)s, version %(version)s, {engine_label()}")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """ptc: the SRv6 Path Tracing probe collector.

    Decodes PT probes (HbH MCD stacks, SRH PT TLVs) into records
    (record schema v1) and writes them out.

    Every option of every command can also come from the environment,
    PTC_<OPTION> (PTC_TOPIC, PTC_TTS_SHIFT, ...), or from the --config file.
    A flag wins over the environment, the environment over the file;
    `ptc config check` shows what a command would use.
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

if __name__ == "__main__":  # pragma: no cover
    main()
