"""`ptc config check`: what each command would use, and from where."""

from __future__ import annotations

from pathlib import Path

import click

from ..ops.config import effective, exposed_secrets, render
from .common import (
    root_group,
    stdout_report,
)


@click.group("config")
def config_group() -> None:
    """Check settings files."""


@config_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def config_check(ctx: click.Context, file: Path | None) -> None:
    """Check the settings file FILE [default: --config] and print every command's effective settings.

    The output is TOML: each value with where it comes from (the file, a
    PTC_* variable, or the default); flags on a command line still win.
    Secrets (passwords) show as ***. Exit status 0 when every key and value
    is valid, 2 with one line naming the key when one is not.
    """
    path = file or ctx.find_root().params.get("config_file")
    config, table = effective(root_group(ctx), path)
    with stdout_report():
        click.echo(render(config, table), nl=False)
    if secrets := exposed_secrets(config):
        warning = f"{config.name} holds {', '.join(secrets)} and other users can read it: chmod 600 {config.name}"
        click.echo(f"ptc: warning: {warning}", err=True)
