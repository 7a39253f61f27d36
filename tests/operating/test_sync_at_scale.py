"""`sync` on a 100,000-line file in constant memory, and Ctrl-C, in a child process as a user
runs it (`pardot-destination sync FILE`) against the fake Pardot."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

import pytest

from tests.child_server import ROOT
from tests.operating.conftest import Operator

LINES = 100_000
PEOPLE = 5  # the fake account stays small (and so do the store writes): the file grows


def _write_big_file(path: Path, lines: int) -> None:
    with path.open("w") as out:
        for n in range(lines):
            person = n % PEOPLE
            event = {
                "type": "identify",
                "messageId": f"big-{n}",
                "userId": f"user-{person}",
                "timestamp": f"2026-03-01T{n // 6000 % 24:02d}:{n // 100 % 60:02d}:{n % 60:02d}Z",
                "traits": {"email": f"p{person}@example.com", "plan": f"plan-{n % 7}",
                           "score_note": "x" * 80},
            }  # fmt: skip
            out.write(json.dumps(event) + "\n")


def _memory(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the peak so far) of a process, in kB."""
    found: dict[str, int] = {}
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # exited and reaped before `returncode` was seen set
        return found
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


async def _start(v: Operator, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "entrypoints.cli.main", *args,
        cwd=ROOT, env=v.env | {"PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc for memory")
async def test_a_100000_line_file_streams_in_constant_memory(v3: Operator) -> None:
    path = v3.tmp / "big.ndjson"
    _write_big_file(path, LINES)
    process = await _start(v3, "sync", str(path))
    # Batches of 200 events for 5 people: one batch call each, 500 in all.
    early: dict[str, int] | None = None
    peak: dict[str, int] = {}
    while process.returncode is None:
        now = _memory(process.pid)  # empty once it has exited (a zombie has no memory)
        if early is None and v3.fake.total_calls >= 100 and now:  # a fifth of the file
            early = now
        peak = now or peak
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 0.2)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    assert early is not None
    assert "100,000" in out.decode()
    grown = peak["VmHWM"] - early["VmRSS"]
    print(f"RSS at 20%: {early['VmRSS']} kB; peak over the whole file: {peak['VmHWM']} kB")
    # Reading the file whole would take hundreds of MB; streaming keeps the peak near
    # where it stood a fifth of the way in.
    assert grown < 20_000, (early, peak)
    assert len(v3.fake.all_prospects()) == PEOPLE


async def test_ctrl_c_stops_cleanly_and_says_how_far(v4: Operator) -> None:
    path = v4.tmp / "long.ndjson"
    _write_big_file(path, 5_000)
    v4.fake.latency = 0.05  # slow enough to be interrupted mid-file
    process = await _start(v4, "sync", str(path))
    for _ in range(600):
        if v4.fake.total_calls >= 3:
            break
        await asyncio.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 130, err.decode()[-2000:]
    said = err.decode()
    assert "interrupted after event" in said and "nothing after it was sent" in said
    assert "Traceback" not in said
    assert "events read" in out.decode()  # the summary is still printed
