"""A stand-in for the user's browser: follow the authorize redirect to the local callback.

aiohttp's client is used rather than httpx because httpx logs every URL it requests, and
the callback URL carries the authorization code the log tests look for.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp


@dataclass
class Visit:
    status: int
    text: str
    code: str | None  # the authorization code the redirect carried
    forged_status: int | None = None  # the answer to an attacker's callback sent first


async def visit(
    url: str, *, tamper_state: bool = False, deny: bool = False, forge_first: bool = False
) -> Visit:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, allow_redirects=False) as answer:
            assert answer.status == 302, await answer.text()
            location = answer.headers["Location"]
        parts = urlsplit(location)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if tamper_state:
            query["state"] = "forged"
        if deny:
            query = {"error": "access_denied", "error_description": "end-user denied", **query}
            query.pop("code", None)
        callback = f"{parts.scheme}://{parts.netloc}{parts.path}"
        forged_status = None
        if forge_first:  # someone on this machine races the real browser with their own code
            forged = {"code": "attacker-code", "state": "guessed"}
            async with session.get(f"{callback}?{urlencode(forged)}") as page:
                forged_status = page.status
        async with session.get(f"{callback}?{urlencode(query)}") as page:
            return Visit(page.status, await page.text(), query.get("code"), forged_status)


class Browser:
    """The `open_url` hook of run_connect: each URL opened is visited in the background."""

    def __init__(self, **options: bool) -> None:
        self.options = options
        self.opened: list[str] = []
        self.visits: list[asyncio.Task[Visit]] = []

    def __call__(self, url: str) -> None:
        self.opened.append(url)
        self.visits.append(asyncio.create_task(visit(url, **self.options)))

    async def last_visit(self) -> Visit:
        return await self.visits[-1]
