"""One logging set-up for the process: JSON for machines, key=value for people."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.child_server import ROOT

PROGRAM = """
import io, logging, structlog
from entrypoints.logs import configure_logging

class Terminal(io.StringIO):
    def isatty(self): return {tty}

out = Terminal()
configure_logging("info", stream=out)
configure_logging("info", stream=io.StringIO())  # configured once: this changes nothing
structlog.get_logger("worker").info("event settled", event_id=7, outcome="delivered")
logging.getLogger("library").warning("plain %s", "record")
structlog.get_logger("worker").debug("hidden at info", reason="a@b.c")
print(out.getvalue(), end="")
"""


def logged(tty: bool) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(tty=tty)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def test_json_lines_when_not_on_a_terminal() -> None:
    ours, theirs = (json.loads(line) for line in logged(tty=False))
    assert ours["event"] == "event settled" and ours["event_id"] == 7
    assert ours["level"] == "info" and ours["logger"] == "worker" and "timestamp" in ours
    assert theirs["event"] == "plain record" and theirs["level"] == "warning"


def test_key_value_pairs_on_one_line_at_a_terminal() -> None:
    ours, theirs = logged(tty=True)
    assert "level='info'" in ours and "event='event settled'" in ours and "event_id=7" in ours
    assert "event='plain record'" in theirs
