"""`python -m pt_collector.cli.manpage`: the ptc(1) man page, made from the commands themselves (`make man`).

One page for every command, from click's own introspection: each command's help, usage and
options with their env var and default, as `--help` shows them. No date and no machine in it,
so the shipped man/ptc.1 is compared with a fresh one by the tests.
"""

from __future__ import annotations

import inspect
import sys

import click

from .. import __version__
from ..ops.config import commands_of
from .main import main

EXIT_STATUS = (
    ("0", "The command did all of its work."),
    ("1", "It ran but could not do all of it: a capture file unreadable, an output that cannot be written, "
          "the brokers unreachable, records not acknowledged, an interface that cannot be captured on."),
    ("2", "A usage error: a bad option or argument, an invalid config file or PTC_* variable."),
)  # fmt: skip


def roff(text: str) -> str:
    """Text for roff: backslashes escaped, hyphens as \\-, no line starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.splitlines())


def paragraphs(help_text: str | None) -> list[str]:
    """A command's help as paragraphs, each one line (click's \\b markers dropped)."""
    text = inspect.cleandoc(help_text or "")
    out = []
    for block in text.split("\n\n"):
        lines = [line.strip() for line in block.splitlines() if line.strip() != "\b"]
        if lines:
            out.append(" ".join(lines))
    return out


def command_section(path: str, command: click.Command, parent: click.Context) -> list[str]:
    ctx = click.Context(command, info_name=path.split()[-1], parent=parent)
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = [f'.SS "{roff(f"ptc {path} {usage}")}"']
    for number, paragraph in enumerate(paragraphs(command.help)):
        lines += ([".PP"] if number else []) + [roff(paragraph)]
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        lines += [".TP", f"\\fB{roff(names)}\\fR", roff(help_text or "")]
    return lines


def render(group: click.Group = main) -> str:
    root = click.Context(group, info_name="ptc", **group.context_settings)
    lines = [
        f'.TH PTC 1 "" "ptc {__version__}" "User Commands"',
        ".SH NAME",
        "ptc \\- the SRv6 Path Tracing probe collector",
        ".SH SYNOPSIS",
        ".B ptc",
        "[\\fB\\-\\-config\\fR \\fIFILE\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
    ]
    for number, paragraph in enumerate(paragraphs(group.help)):
        lines += ([".PP"] if number else []) + [roff(paragraph)]
    lines.append(".SH OPTIONS")
    for param in group.get_params(root):
        record = param.get_help_record(root)
        if record is not None:
            lines += [".TP", f"\\fB{roff(record[0])}\\fR", roff(record[1])]
    lines.append(".SH COMMANDS")
    for path, command in commands_of(group).items():
        lines += command_section(path, command, root)
    lines.append(".SH EXIT STATUS")
    for status, meaning in EXIT_STATUS:
        lines += [".TP", f"\\fB{status}\\fR", roff(meaning)]
    lines += [
        ".SH SHELL COMPLETION",
        roff('bash: eval "$(_PTC_COMPLETE=bash_source ptc)" in ~/.bashrc; '
             'zsh: eval "$(_PTC_COMPLETE=zsh_source ptc)"; fish: _PTC_COMPLETE=fish_source ptc | source.'),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
