"""The architecture stays easy to see (docs/architecture.md): imports point one way with no exemptions, only the
composition root (app/) wires stages together and nothing imports it, SQL lives only in repo modules and
migrations (constants and f-strings alike), each table has one writing stage, and every read model's fields
exist on the row type it shows."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

from core.readmodel import RowRead
from tests.conftest import ROOT

STAGES = ("core", "ingest", "rules", "score", "notify", "report", "field", "api", "simulators", "app")
# What each stage may import (besides itself). rules, score and notify meet only in the database.
ALLOWED = {
    "core": {"core"},
    "ingest": {"core", "rules", "ingest"},
    "rules": {"core", "rules"},
    "score": {"core", "score"},
    "notify": {"core", "notify"},
    # report reads every stage's tables through its own repo (a read-only view, like the KPIs it computes).
    "report": {"core", "report"},
    # field (the work on foot) feeds the score ledger through score.service, as the API records findings.
    "field": {"core", "score", "field"},
    "api": {"core", "rules", "score", "notify", "report", "field", "api"},
    "simulators": {"core", "simulators"},
    "app": set(STAGES),  # the composition root
}
# Tables two stages write, and why: they are where rules and notify meet (DESIGN "Data flow").
MEETING_TABLES = {
    # rules appends one row per transition; notify appends its reminders and marks rows routed (the queue's
    # consumer). Nothing else touches it.
    "outbox": {"rules", "notify"},
    # rules appends the lifecycle (raised, cleared, acknowledged, resolved, actuated); notify appends the events of
    # its own part of it (notified, escalated), so one history tells the whole story of an alarm.
    "alarm_event": {"rules", "notify"},
}
SQL_RE = re.compile(
    r"^\s*(SELECT\s|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|"
    r"ALTER\s+TABLE|WITH\s+\w+\s+AS\s*\()",
    re.IGNORECASE | re.MULTILINE,
)
WRITE_RE = re.compile(
    r"\b(?:INSERT\s+INTO\s+([a-z_]+)|DELETE\s+FROM\s+([a-z_]+)|"
    r"(?<!DO )UPDATE\s+([a-z_]+)(?:\s+[a-z_]+)?\s+SET)\b",
    re.IGNORECASE,
)


def modules() -> list[Path]:
    return sorted(p for stage in STAGES for p in (ROOT / stage).rglob("*.py"))


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


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


@pytest.mark.parametrize("path", modules(), ids=_rel)
def test_imports_point_one_way(path: Path) -> None:
    rel = _rel(path)
    stage = rel.split("/")[0]
    wrong = imported_stages(ast.parse(path.read_text(encoding="utf-8"))) - ALLOWED[stage]
    assert not wrong, f"{rel} imports {sorted(wrong)}; {stage} may import only {sorted(ALLOWED[stage])}"


def test_only_the_root_imports_every_stage_and_nothing_imports_the_root() -> None:
    """app/ is the composition root: no stage module imports it (tests and the bench sit above it)."""
    importers = [
        _rel(p)
        for p in modules()
        if not _rel(p).startswith("app/") and "app" in imported_stages(ast.parse(p.read_text(encoding="utf-8")))
    ]
    assert importers == []
    assert not any((ROOT / stage / "__main__.py").exists() for stage in STAGES if stage != "app"), (
        "processes start from the root (`gridwatch serve --only PART`), not from a stage"
    )


def sql_texts(tree: ast.AST) -> list[str]:
    """String constants, and the literal parts of f-strings joined, that hold SQL."""
    found: list[str] = []
    in_fstring = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else " x " for v in node.values
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in in_fstring:
            text = node.value
        else:
            continue
        if SQL_RE.search(text):
            found.append(text)
    return found


def is_repo(path: Path) -> bool:
    return path.name == "repo.py" or path.name.endswith("_repo.py") or _rel(path) == "core/db.py"


@pytest.mark.parametrize("path", modules(), ids=_rel)
def test_sql_only_in_repo_modules(path: Path) -> None:
    if is_repo(path):
        return
    offenders = [t.strip().splitlines()[0][:60] for t in sql_texts(ast.parse(path.read_text(encoding="utf-8")))]
    assert not offenders, f"{_rel(path)} holds SQL (move it to a repo module): {offenders}"


def test_the_f_string_check_catches_sql() -> None:
    tree = ast.parse('table = "x"\nq = f"SELECT * FROM {table} WHERE id = 1"\n')
    assert sql_texts(tree) == ["SELECT * FROM  x  WHERE id = 1"]


def test_each_table_has_one_writing_stage() -> None:
    writers: dict[str, set[str]] = {}
    for path in modules():
        if not is_repo(path) or _rel(path) == "core/db.py":
            continue
        stage = _rel(path).split("/")[0]
        for text in sql_texts(ast.parse(path.read_text(encoding="utf-8"))):
            for match in WRITE_RE.findall(text):
                writers.setdefault("".join(match).lower(), set()).add(stage)
    assert {"alarm", "reading", "silence", "command", "score_entry"} <= writers.keys()
    shared = {t: w for t, w in writers.items() if len(w) > 1}
    assert shared == MEETING_TABLES, "a table written by two stages: make one stage own it (its service)"


def read_models() -> list[type[RowRead]]:
    for package in ("api", "score", "notify", "rules", "field", "core"):
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            importlib.import_module(info.name)

    def walk(cls: type[RowRead]) -> list[type[RowRead]]:
        return [c for sub in cls.__subclasses__() for c in (sub, *walk(sub))]

    return [m for m in walk(RowRead) if "ROW" in vars(m) or any("ROW" in vars(b) for b in m.__mro__[1:-3])]


def test_every_read_model_field_exists_on_its_row() -> None:
    models = read_models()
    assert {m.__name__ for m in models} >= {
        "AlarmRead",
        "SilenceRead",
        "CommandRead",
        "LedgerEntryRead",
        "FindingRead",
        "OpenAlarmRead",
    }
    for model in models:
        row_fields = {f.name for f in dataclasses.fields(model.ROW)}
        missing = set(model.model_fields) - row_fields - model.DERIVED
        assert not missing, f"{model.__name__} shows {sorted(missing)}, which {model.ROW.__name__} does not have"
