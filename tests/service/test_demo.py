"""The README's first command: the demo runs the real service and shows real prospects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_delivers_the_seed_examples() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "entrypoints.cli.main", "demo", "--seconds", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "tom@initech.example" in out and "Tom Smykowski" in out and "Liaison" in out
    assert "matched by fid 00Q5e00000AbCdEfGH" in out
    assert "skipped: integrations.Pardot is false" in out
    assert "rejected: missing trait email" in out
    peter = next(
        line for line in out.splitlines() if "peter@initech.example" in line and "│ 100" in line
    )
    assert "false" in peter
