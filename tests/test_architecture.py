"""The architecture stays easy to see: imports point one way, SQL lives in repo modules and migrations."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

STAGES = ("core", "ingest", "rules", "notify", "api", "simulators")
# What each stage may import (besides itself). rules and notify meet only in the database.
ALLOWED = {
    "core": {"core"},
    "ingest": {"core", "rules", "ingest"},
    "rules": {"core", "rules"},
    "notify": {"core", "notify"},
    "api": {"core", "rules", "notify", "api"},
    "simulators": {"core", "simulators"},
}
# The composition root: what the console script starts; it wires every stage together.
COMPOSITION_ROOT = {"core/cli.py", "core/services.py", "core/demo.py"}
SQL_RE = re.compile(r"^\s*(SELECT\s|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|"
                    r"ALTER\s+TABLE|WITH\s+\w+\s+AS\s*\()", re.IGNORECASE | re.MULTILINE)


def modules() -> list[Path]:
    return sorted(p for stage in STAGES for p in (ROOT / stage).rglob("*.py"))


def imported_stages(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in STAGES}
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    if rel in COMPOSITION_ROOT:
        return
    stage = rel.split("/")[0]
    wrong = imported_stages(ast.parse(path.read_text(encoding="utf-8"))) - ALLOWED[stage]
    assert not wrong, f"{rel} imports {sorted(wrong)}; {stage} may import only {sorted(ALLOWED[stage])}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_sql_only_in_repo_modules(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    if path.name == "repo.py" or path.name.endswith("_repo.py") or rel == "core/db.py":
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    offenders = [node.value.strip().splitlines()[0][:60] for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_RE.search(node.value)]
    assert not offenders, f"{rel} holds SQL (move it to a repo module): {offenders}"
