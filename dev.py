#!/usr/bin/env python3
"""One entry point for newcomers and CI: `python3 dev.py demo` or `python3 dev.py test`.

Each command creates `.venv` when it is missing, installs the project into it (again only
when `pyproject.toml` changed), then runs. Only the standard library is used here because
this file runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".installed-from"


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    code = subprocess.call([str(c) for c in cmd], cwd=ROOT)
    if code:
        sys.exit(code)


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PY, "-m", "pip", "install", "--quiet", "-e", ".[test]")
    STAMP.write_text(digest)


def test(args: list[str]) -> None:
    ensure_venv()
    run(BIN / "ruff", "check", ".")
    run(BIN / "ruff", "format", "--check", ".")
    run(BIN / "mypy")
    run(BIN / "lint-imports")
    # Two workers: most tests wait on subprocesses and sockets, not on a core. The tests
    # whose pass depends on timing run one after another on one of them (tests/conftest.py).
    run(
        PY,
        "-m",
        "pytest",
        "-n",
        os.environ.get("PYTEST_WORKERS", "2"),
        "--dist",
        "loadgroup",
        *args,
    )


def demo(args: list[str]) -> None:
    ensure_venv()
    run(BIN / "pardot-destination", "demo", *args)


def main() -> None:
    commands = {"test": test, "demo": demo}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit("usage: python3 dev.py {demo|test} [extra arguments]")
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
