"""The house: imports between the stage folders run one way.

cli -> ops -> analyze -> pipeline -> kafka -> capture -> codec.

Read from the source (ast), so an import that runs upwards fails here, in `make test`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pt_collector"
ORDER = ["cli", "ops", "analyze", "pipeline", "kafka", "capture", "codec"]  # each may import itself and those after it


def stage_imports(source: str, parts: tuple[str, ...]) -> set[str]:
    """The stage folders that a module (its path in the package as `parts`) imports."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:  # relative: against the module's own package
            target = [*parts[: len(parts) - node.level], *(node.module.split(".") if node.module else [])]
        elif node.module and node.module.split(".")[0] == "pt_collector":
            target = node.module.split(".")[1:]
        else:
            continue
        first = target[:1] or [alias.name for alias in node.names]
        found.update(name for name in first if name in ORDER)
    return found


def upward(source: str, parts: tuple[str, ...]) -> set[str]:
    return stage_imports(source, parts) - set(ORDER[ORDER.index(parts[0]) :])


def test_every_stage_folder_imports_only_downwards():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) > 1 and parts[0] in ORDER:
            wrong += [f"{'/'.join(parts)} imports {target}/" for target in upward(path.read_text(), parts)]
    assert not wrong, "imports that run upwards: " + "; ".join(wrong)


def test_an_upward_import_is_seen():
    parts = ("codec", "decode.py")
    assert upward("from ..pipeline.batch import Batcher\n", parts) == {"pipeline"}
    assert upward("from pt_collector.cli.main import main\n", parts) == {"cli"}
    assert upward("from .. import kafka\n", parts) == {"kafka"}
    assert upward("from .record import Record\nimport msgspec\n", parts) == set()
    assert upward("from ..codec.record import Record\n", ("kafka", "message.py")) == set()
