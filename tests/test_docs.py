"""The repository stands alone: no file links outside it, the docs' links resolve, the record examples are real."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from pt_collector.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = "/".join(("shared", "docs"))  # the notes ptc was written from, which a clone does not have
MD_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)")  # [text](target) and ![alt](target)
UP_PATH = re.compile(r"(?<![\w./-])(?:\.\./)+[\w./-]*")  # a relative path that climbs, in code or prose
HEADING = re.compile(r"^#+\s+(.*)$", re.M)


def repo_files(suffix: str) -> list[Path]:
    """Tracked files and new ones not ignored, or every file outside dot folders when this is no git checkout."""
    try:
        done = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True
        )
    except OSError:
        done = None
    if done is not None and done.returncode == 0:
        return sorted({ROOT / n for n in done.stdout.decode().split("\0") if n.endswith(suffix)})
    return [p for p in ROOT.rglob(f"*{suffix}") if not any(s.startswith(".") for s in p.relative_to(ROOT).parts)]


def slug(heading: str) -> str:
    """A heading's anchor, as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def relative_targets(path: Path, pattern: re.Pattern) -> list[str]:
    targets = pattern.findall(path.read_text(encoding="utf-8"))
    return [t for t in targets if "://" not in t and not t.startswith(("mailto:", "#"))]


def outside(path: Path, target: str) -> bool:
    return not (path.parent / target.split("#")[0]).resolve().is_relative_to(ROOT)


MARKDOWN = repo_files(".md")
PYTHON = repo_files(".py")


def test_the_files_are_found():
    assert ROOT / "README.md" in MARKDOWN and ROOT / "docs" / "record-schema.md" in MARKDOWN
    assert Path(__file__).resolve() in PYTHON


@pytest.mark.parametrize("path", MARKDOWN + PYTHON, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_links_outside_the_repository(path):
    assert OUTSIDE not in path.read_text(encoding="utf-8")
    pattern = MD_LINK if path.suffix == ".md" else UP_PATH
    assert [t for t in relative_targets(path, pattern) if outside(path, t)] == []


def resolves(path: Path, target: str) -> bool:
    """The linked file exists and, for a Markdown file, so does the heading the link's anchor names."""
    name, _, anchor = target.partition("#")
    linked = path.parent / name
    if not linked.exists() or not anchor or linked.suffix != ".md":
        return linked.exists()
    return anchor in {slug(h) for h in HEADING.findall(linked.read_text(encoding="utf-8"))}


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert [t for t in relative_targets(path, MD_LINK) if not resolves(path, t)] == []


def json_examples(doc: str) -> list[dict]:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def first_line(*args: str) -> dict:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout.splitlines()[0])


def test_record_schema_examples_are_what_ptc_emits(tmp_path):
    probe, histogram = json_examples("record-schema.md")
    got = first_line("replay", str(ROOT / "pcaps" / "encap.pcap"), "--tts-shift", "18", "-o", "-")
    assert list(got.items()) == list(probe.items())  # same fields, same values, same order
    config = tmp_path / "h.toml"
    config.write_text(
        'tts_shift = 18\n[[rules]]\nname = "lab"\nfunction = "histogram"\ninterval_ms = 100\n'
        "bounds_us = [5000, 10000, 20000]\nhop_bounds_us = [1000, 5000]\n"
    )
    got = first_line("--config", str(config), "replay", str(ROOT / "pcaps" / "encap.pcap"), "-o", "-")
    assert list(got.items()) == list(histogram.items())
