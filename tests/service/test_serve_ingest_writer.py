"""`serve` stores through its ingest writer process: events posted while it lives, or after
it died, are delivered once, and the writer never outlives `serve`."""

from __future__ import annotations

import asyncio
import os
import re
import signal

from tests.service.conftest import ServiceProcess, Stack
from tests.service.test_crash_and_sharing import attempts, post_batch
from tests.service.test_reliability import identify

STARTED = re.compile(r"ingest writer started, pid (\d+)")


def writer_pid(service: ServiceProcess) -> int:
    found = [STARTED.search(line) for line in service.log]
    pids = [int(match.group(1)) for match in found if match]
    assert pids, "serve did not start an ingest writer:\n" + "\n".join(service.log[-20:])
    return pids[-1]


async def wait_gone(pid: int, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the ingest writer {pid} outlived serve")


async def test_serve_stores_through_its_writer_and_ends_it_on_the_way_out(
    v4_stack: Stack,
) -> None:
    serve = await v4_stack.service()
    pid = writer_pid(serve)
    await post_batch(serve.url, [identify(n) for n in range(10)])
    await v4_stack.wait_until(serve.url, lambda c: c("delivered") == 10)
    assert await serve.terminate() == 0
    await wait_gone(pid)


async def test_a_killed_writer_costs_no_event_and_is_replaced(
    v4_stack: Stack,
) -> None:
    serve = await v4_stack.service()
    await post_batch(serve.url, [identify(n) for n in range(5)])
    os.kill(writer_pid(serve), signal.SIGKILL)
    await asyncio.sleep(0.3)
    await post_batch(serve.url, [identify(n) for n in range(5, 12)])  # still 200
    await v4_stack.wait_until(serve.url, lambda c: c("delivered") == 12)
    assert any("ingest writer exited" in line for line in serve.log)
    killed = writer_pid(serve)
    for _ in range(200):  # a new writer follows after RESTART_SECONDS (5 s)
        if writer_pid(serve) != killed:
            break
        await asyncio.sleep(0.05)
    assert writer_pid(serve) != killed, "the dead writer was not replaced"
    await post_batch(serve.url, [identify(n) for n in range(12, 15)])
    await v4_stack.wait_until(serve.url, lambda c: c("delivered") == 15)
    assert set(attempts(v4_stack).values()) == {1}
    emails = sorted(p["email"] for p in v4_stack.fake.all_prospects())
    assert emails == sorted(f"person{n}@x.io" for n in range(15))


async def test_kill_9_of_serve_takes_its_writer_and_a_restart_delivers_once(
    v4_stack: Stack,
) -> None:
    v4_stack.fake.latency = 1.0  # the events are still queued when serve dies
    first = await v4_stack.service()
    pid = writer_pid(first)
    await post_batch(first.url, [identify(n) for n in range(8)])
    await first.kill9()
    await wait_gone(pid)
    v4_stack.fake.latency = 0.0
    second = await v4_stack.service()
    await v4_stack.wait_until(second.url, lambda c: c("delivered") == 8, seconds=30)
    emails = sorted(p["email"] for p in v4_stack.fake.all_prospects())
    assert emails == sorted(f"person{n}@x.io" for n in range(8))
