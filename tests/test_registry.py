"""Registry files: `gridwatch load` is an idempotent upsert; bad files fail with line numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from core.errors import RegistryError
from core.registry import parse_registry, read_registry
from core.settings import Settings
from tests.conftest import ROOT, small_registry

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GRIDWATCH_DATABASE_URL": settings.dsn, "GRIDWATCH_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def counts(settings: Settings) -> dict[str, int]:
    with psycopg.connect(settings.dsn) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in (
                "community",
                "grid",
                "micro_grid",
                "worker",
                "worker_micro_grid",
                "merchant",
                "site",
                "device",
                "device_state",
            )
        }


def test_examples_describe_the_brief() -> None:
    storage = read_registry(ROOT / "examples" / "storage-area.yaml")
    compound = read_registry(ROOT / "examples" / "open-compound.yaml")
    assert len(storage.merchants) == 57
    assert sum(w.role == "micro_grid_worker" for w in storage.workers) == 4
    assert any(s.kind == "charging_shed" for s in storage.sites)
    assert sum(d.kind == "gas_detector" for d in compound.devices) == 88
    workers = [w for w in compound.workers if w.role == "micro_grid_worker"]
    assert len(workers) == 21
    assert any(len(w.micro_grids) > 1 for w in workers), "one worker covers several micro-grids"


def test_load_examples_twice_is_idempotent(settings: Settings) -> None:
    for path in EXAMPLES:
        result = run_cli(settings, "load", str(path))
        assert result.returncode == 0, result.stderr
        assert "loaded" in result.stdout
    first = counts(settings)
    for path in EXAMPLES:
        assert run_cli(settings, "load", str(path)).returncode == 0
    assert counts(settings) == first
    assert first["device"] == sum(len(read_registry(p).devices) for p in EXAMPLES)


def test_load_updates_in_place(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(small_registry(), encoding="utf-8")
    assert run_cli(settings, "load", str(path)).returncode == 0
    path.write_text(
        small_registry()
        .replace("name: Wang", "name: Wang Wei")
        .replace("micro_grids: [mg1], notify", "micro_grids: [mg1, mg2], notify"),
        encoding="utf-8",
    )
    assert run_cli(settings, "load", str(path)).returncode == 0
    with psycopg.connect(settings.dsn) as conn:
        assert conn.execute("SELECT name FROM worker WHERE id = 'w1'").fetchone() == ("Wang Wei",)
        assert conn.execute(
            "SELECT array_agg(micro_grid_id ORDER BY micro_grid_id) FROM worker_micro_grid WHERE worker_id = 'w1'"
        ).fetchone() == (["mg1", "mg2"],)


@pytest.mark.parametrize(
    ("mutate", "line", "words"),
    [
        (lambda t: t.replace("kind: gas_detector, site: s1", "kind: gas_detektor, site: s1"), 17, "devices.0.kind"),
        (
            lambda t: t.replace("role: micro_grid_worker, micro_grids: [mg1]", "role: janitor, micro_grids: [mg1]"),
            9,
            "workers.0.role",
        ),
        (
            lambda t: t.replace(
                "{id: s2, kind: building, micro_grid: mg2,", "{id: s2, kind: building, micro_grid: mgX,"
            ),
            15,
            "site 's2' is in unknown micro_grid 'mgX'",
        ),
        (lambda t: t.replace("community: {id: c1", "community: {id: c1, colour: red"), 1, "community.colour"),
        (lambda t: t + "devices: [\n", None, "not valid YAML"),
    ],
)
def test_bad_files_name_the_line(mutate: object, line: int | None, words: str) -> None:
    text = mutate(small_registry())  # type: ignore[operator]
    with pytest.raises(RegistryError) as err:
        parse_registry(text, "r.yaml")
    assert words in str(err.value)
    if line is not None:
        assert f"r.yaml:{line}:" in str(err.value)


def test_cli_reports_bad_file_and_exits_nonzero(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(small_registry().replace("location: kitchen}", "location: attic}", 1), encoding="utf-8")
    result = run_cli(settings, "load", str(path))
    assert result.returncode == 2
    assert f"{path}:17: devices.0.location" in result.stderr
    assert counts(settings)["device"] == 0, "nothing is half-loaded"
