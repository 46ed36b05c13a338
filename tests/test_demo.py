"""Issue 2, must show 1: the demo command, on embedded defaults, shows a gas alarm delivered."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_demo_runs_on_embedded_defaults_and_delivers_a_gas_alarm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "demo",
            "--duration",
            "20",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "starting a private PostgreSQL" in out and "starting a private Mosquitto" in out
    assert "loaded 荷花池自建房仓储区" in out
    delivered = [line for line in out.splitlines() if "delivered" in line and "燃气泄漏" in line]
    assert delivered, out[-3000:]
    assert "gridwatch is running" in out and "/login" in out
    # issue 21: the work on foot in the tour
    assert re.search(r"patrol round \d+ at .*: a failed check-list item became work order \d+", out), out[-3000:]
    assert re.search(r"resident report \d+ from .*/r/receipt/", out) and re.search(r"drill \d+ \(网格赶考\)", out)
