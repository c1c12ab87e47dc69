"""`ptc config check`: what each command would use, and from where."""

from __future__ import annotations

from pathlib import Path

import click

from ..ops.config import configurable, effective, exposed_secrets, render
from .common import (
    root_group,
    say_warning,
    stdout_report,
)


@click.group("config", short_help="Check a settings file; show what a command would use.")
def config_group() -> None:
    """Settings files: `ptc config check [COMMAND] [FILE]`."""


@config_group.command("check", short_help="Check a settings file and print the effective settings.")
@click.argument("words", nargs=-1, metavar="[COMMAND] [FILE]")
@click.pass_context
def config_check(ctx: click.Context, words: tuple[str, ...]) -> None:
    """Check the settings FILE [default: --config] and print the effective settings of COMMAND
    [default: every command] (collect, replay, consume, ...).

    The output is TOML: each value with where it comes from (the file, a
    PTC_* variable, or the default); flags on a command line still win.
    Secrets (passwords) show as ***. A FILE named like a command is given
    as ./NAME. Exit status 0 when every key and value is valid, 2 with one
    line naming the key when one is not (or for a usage error).
    """
    names = configurable(root_group(ctx))
    command = words[0] if words and words[0] in names else None
    rest = words[1:] if command else words
    if len(rest) > 1:
        raise click.UsageError(f"config check takes [COMMAND] [FILE], got {' '.join(words)!r}")
    path = Path(rest[0]) if rest else ctx.find_root().params.get("config_file")
    if path is not None and path.is_dir():
        raise click.UsageError(f"{path} is a directory, not a settings file")
    config, table = effective(root_group(ctx), path)
    if command:
        table = {command: table[command]}
    with stdout_report():
        click.echo(render(config, table), nl=False)
    if secrets := exposed_secrets(config):
        warning = f"{config.name} holds {', '.join(secrets)} and other users can read it: chmod 600 {config.name}"
        say_warning(warning)
