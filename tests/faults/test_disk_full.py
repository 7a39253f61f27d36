"""The disk under the SQLite file fills while events arrive, then space comes back.

The queue file lives on a small tmpfs the test mounts (skipped, saying why, where mounting is
not allowed); a file of the test's own then takes every byte left. What must hold: no 200 for
an event that was not stored (each acknowledged event is in the file at the end), 503 with
Retry-After while nothing can be stored, `PRAGMA integrity_check` clean, and once space is
freed the same process stores and delivers again, without a restart.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.flow import AUTH
from tests.service.conftest import Stack

SIZE = "16m"
BIG = "x" * 20_000  # a trait large enough that each event needs new pages


@contextlib.contextmanager
def small_disk(where: Path) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {SIZE} tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> None:
    """Take every byte the file system has left."""
    filler = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"\0" * 65536
        while True:
            try:
                os.write(filler, chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                if len(chunk) == 1:
                    return
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(filler)


def event(n: int, notes: str = "") -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"m{n}",
        "userId": f"u{n}",
        "traits": {"email": f"person{n}@x.io", "notes": notes or f"n{n}"},
    }


async def test_a_full_disk_refuses_with_503_keeps_the_file_sound_and_recovers_by_itself(
    v4_stack: Stack, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "small") as disk:
        queue_file = disk / "queue.db"
        # A batch the full disk stopped cannot record its retry either: its events wait for
        # their lease to lapse, compressed here from the default 10 s.
        service = await v4_stack.service(
            DESTINATION_QUEUE_URL=f"sqlite:///{queue_file}", DESTINATION_LEASE_SECONDS="2"
        )
        acknowledged: list[int] = []
        refused: list[str | None] = []
        async with httpx.AsyncClient(timeout=30) as client:

            async def send(n: int, notes: str = "") -> int:
                answer = await client.post(
                    f"{service.url}/v1/identify", json=event(n, notes), auth=AUTH
                )
                if answer.status_code == 200:
                    acknowledged.append(n)
                else:
                    assert answer.status_code == 503, answer.text
                    refused.append(answer.headers.get("Retry-After"))
                return answer.status_code

            for n in range(10):
                assert await send(n) == 200
            fill(disk / "filler")
            full_at = time.monotonic()
            statuses = [await send(n, BIG) for n in range(10, 40)]
            ready = await client.get(f"{service.url}/readyz")
            (disk / "filler").unlink()  # the operator frees space; nothing is restarted
            freed_at = time.monotonic()
            recovered = None
            for n in range(40, 100):
                if await send(n) == 200 and recovered is None:
                    recovered = time.monotonic() - freed_at
                if recovered is not None and len(acknowledged) >= 10 + 20:
                    break
            total = len(acknowledged)
            await v4_stack.wait_until(service.url, lambda c: c("delivered") == total, seconds=60)
            ready_after = await client.get(f"{service.url}/readyz")
        assert await service.terminate() == 0
        with contextlib.closing(sqlite3.connect(queue_file)) as db:
            integrity = db.execute("PRAGMA integrity_check").fetchall()
            stored = {int(m[1:]) for (m,) in db.execute("SELECT message_id FROM events")}
    print(
        f"\ndisk full: {statuses.count(200)} of 30 events acknowledged while full (stored "
        f"in pages the file had), {statuses.count(503)} refused with 503; /readyz said "
        f"{ready.status_code} {ready.json().get('reason', '')!r}; {total} acknowledged in "
        f"all, lost {len(set(acknowledged) - stored)}; stored again {recovered:.2f} s after "
        f"space was freed; integrity {integrity}; {time.monotonic() - full_at:.1f} s in all"
    )
    assert 503 in statuses, "nothing was refused on a full disk"
    assert set(refused) - {None} and None not in refused, "a 503 without Retry-After"
    assert set(acknowledged) <= stored, "a 200 for an event that was not stored"
    assert integrity == [("ok",)]
    assert ready.status_code == 503 and ready.json()["reason"].startswith("disk full: "), ready.text
    assert str(disk) not in ready.text and "queue.db" not in ready.text
    assert ready_after.status_code == 200, ready_after.text
    assert recovered is not None
