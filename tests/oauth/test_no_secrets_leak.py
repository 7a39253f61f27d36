"""No token, secret or private key in any log record, exception message or repr."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.salesforce.token_file import TokenStore
from adapters.salesforce.token_providers import (
    JwtBearerProvider,
    RefreshTokenProvider,
    StaticTokenProvider,
)
from contracts.fake_pardot import FakePardot, RunningFakePardot
from contracts.fake_pardot_state import DEFAULT_BUSINESS_UNIT_ID, DEFAULT_REFRESH_TOKEN
from domain.errors import ConfigurationError
from entrypoints.cli.connect import run_connect
from tests.oauth.browser import Browser
from tests.oauth.conftest import CLIENT_ID, CLIENT_SECRET, chosen_tokens, repository_for
from tests.service.conftest import WRITE_KEY as SERVICE_WRITE_KEY
from tests.service.conftest import open_stack


def private_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


async def test_nothing_secret_reaches_logs_errors_or_reprs(
    server: RunningFakePardot,
    fake: FakePardot,
    http: httpx.AsyncClient,
    token_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and aiohttp included
    fake.rotate_refresh_tokens = True
    refresh_tokens = {DEFAULT_REFRESH_TOKEN}
    shown: list[str] = []  # reprs and error messages
    pem = private_pem()
    key = pem.replace("\n", "")
    key_body = key.split("-----")[2]

    # connect, then deliveries through a rotation and a 184
    browser = Browser()
    await run_connect(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        business_unit_id=DEFAULT_BUSINESS_UNIT_ID,
        login_url=server.url,
        pardot_url=server.url,
        token_file=token_file,
        callback_timeout=5.0,
        open_url=browser,
        echo=shown.append,
    )
    code = (await browser.last_visit()).code
    assert code
    refresh_tokens |= set(fake.refresh_tokens)
    tokens = chosen_tokens(
        login_url=server.url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=None,
        token_file=token_file,
    )
    repo = repository_for(http, tokens, server)
    pid = fake.seed_prospect(email="pat@example.com")
    await repo.read_by_id(pid)
    refresh_tokens |= set(fake.refresh_tokens)
    fake.expire_access_tokens()
    await asyncio.gather(*(repo.read_by_id(pid) for _ in range(5)))
    refresh_tokens |= set(fake.refresh_tokens)

    # a revoked token, a wrong secret, a refused JWT key
    for live in list(fake.refresh_tokens):
        fake.revoke_refresh_token(live)
    fake.expire_access_tokens()
    await tokens.invalidate()
    with pytest.raises(ConfigurationError) as revoked:
        await tokens.token()
    shown.append(str(revoked.value))
    wrong = RefreshTokenProvider(
        login_url=server.url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET + "-wrong",
        refresh_token=DEFAULT_REFRESH_TOKEN,
    )
    with pytest.raises(ConfigurationError) as refused:
        await wrong.token()
    shown.append(str(refused.value))
    jwt = JwtBearerProvider(
        login_url=server.url, consumer_key="unknown", username="u@x.io", private_key=pem
    )
    with pytest.raises(ConfigurationError) as jwt_refused:
        await jwt.token()
    shown.append(str(jwt_refused.value))
    static = StaticTokenProvider("static-secret-token")

    shown += [repr(tokens), repr(wrong), repr(jwt), repr(static), repr(TokenStore(token_file))]
    shown += [repr(TokenStore(token_file).load()), str(TokenStore(token_file).load())]
    access_tokens = set(fake.access_tokens)
    secrets = {CLIENT_SECRET, key_body, "static-secret-token", code}
    secrets |= refresh_tokens | access_tokens
    assert len(refresh_tokens) >= 3 and len(access_tokens) >= 3

    logged = [record.getMessage() for record in caplog.records]
    logged += [record.exc_text or "" for record in caplog.records]
    assert any("refreshed" in line for line in logged)  # the logs are there, only clean
    for text in logged + shown:
        flat = text.replace("\n", "")
        leaked = [s[:8] + "…" for s in secrets if s in flat]
        assert not leaked, f"secret in {text[:120]!r}"


async def test_the_service_log_at_info_names_no_email_and_no_trait_value(tmp_path: Path) -> None:
    """`serve` at its default level, through creates, updates, a rejection, retries and a
    lookup field: ids, outcomes and codes are logged; emails and trait values never."""
    emails = ["ada.lovelace@engines.example", "grace.hopper@cobol.example", "not-an-email"]
    values = ["Analytical Engine Works", "Countess-of-Lovelace", "org-77f3c1", "Rear Admiral"]

    def event(n: int, email: str, **traits: str) -> dict[str, object]:
        return {
            "type": "identify", "messageId": f"log-{n}", "userId": f"person-{n}",
            "timestamp": f"2026-11-27T09:0{n}:00Z", "traits": {"email": email, **traits},
        }  # fmt: skip

    events = [
        event(1, emails[0], company=values[0], title=values[1], org_id=values[2]),
        event(2, emails[1], job_title=values[3]),
        event(3, emails[2], company=values[0]),  # rejected: no valid email
        event(4, emails[0], company=values[0], org_id=values[2]),  # the same prospect again
    ]
    async for stack in open_stack(tmp_path, 4, custom_fields={"org_id"}):
        stack.fake.fail_next(2, err_code=66)  # retried within the call
        stack.fake.answer_next(1, "maintenance")  # and a page that is not Pardot's
        service = await stack.service(PARDOT_LOOKUP_FIELD_ID="org_id")
        async with httpx.AsyncClient() as client:
            for sent in events:
                answer = await client.post(
                    f"{service.url}/v1/identify", json=sent, auth=(SERVICE_WRITE_KEY, "")
                )
                assert answer.status_code == 200
        await stack.wait_until(service.url, lambda c: c("delivered") + c("rejected") == 4)
        assert await service.terminate() == 0
        log = service.log
    text = "\n".join(log)
    leaked = [v for v in [*emails, *values, "engines.example", "Lovelace"] if v in text]
    assert not leaked, f"{leaked} at INFO in:\n{text}"
    settled = [json.loads(line) for line in log if '"event settled"' in line]
    assert {entry["outcome"] for entry in settled} == {"delivered", "rejected"}
    assert all("event_id" in entry for entry in settled)
    assert any("prospect_id" in entry for entry in settled)
