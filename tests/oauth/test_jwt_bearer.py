"""The JWT bearer flow against the fake, with an RSA key made for the test."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from authlib.oauth2.rfc7523 import JWTBearerGrant
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey

from adapters.salesforce.token_providers import JWT_BEARER_GRANT, JwtBearerProvider
from contracts.fake_pardot import FakePardot, RunningFakePardot
from domain.errors import ConfigurationError
from tests.oauth.conftest import chosen_tokens, repository_for

CONSUMER_KEY = "3MVG9-jwt-consumer-key"
USERNAME = "integration@example.com"


def rsa_key() -> tuple[str, str]:
    """(private PEM, public PEM)"""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return rsa_key()


@pytest.fixture
def key_file(tmp_path: Path, keys: tuple[str, str], fake: FakePardot) -> Path:
    private, public = keys
    fake.register_jwt_client(CONSUMER_KEY, public, users={USERNAME})
    path = tmp_path / "server.key"
    path.write_text(private)
    path.chmod(0o600)
    return path


async def test_jwt_bearer_provider_gets_a_token_pardot_accepts(
    server: RunningFakePardot, fake: FakePardot, http: httpx.AsyncClient, key_file: Path
) -> None:
    tokens = chosen_tokens(
        login_url=server.url,
        client_id=CONSUMER_KEY,
        client_secret=None,
        refresh_token=None,
        token_file=None,
        jwt_username=USERNAME,
        jwt_private_key_file=key_file,
    )
    assert isinstance(tokens, JwtBearerProvider)
    repo = repository_for(http, tokens, server)
    pid = fake.seed_prospect(email="jwt@example.com")
    assert (await repo.read_by_id(pid)) is not None
    assert fake.token_requests == 1
    # No refresh token: a refused access token is replaced by a new assertion.
    fake.expire_access_tokens()
    assert (await repo.read_by_id(pid)) is not None
    assert fake.token_requests == 2
    assert not fake.refresh_tokens.keys() - {"demo-refresh-token"}


async def test_a_key_the_app_does_not_hold_is_refused(
    server: RunningFakePardot, key_file: Path
) -> None:
    other_private, _ = rsa_key()
    tokens = JwtBearerProvider(
        login_url=server.url,
        consumer_key=CONSUMER_KEY,
        username=USERNAME,
        private_key=other_private,
    )
    with pytest.raises(ConfigurationError, match="invalid assertion") as caught:
        await tokens.token()
    assert "PRIVATE KEY" not in str(caught.value)


async def test_a_user_not_pre_authorized_is_refused(
    server: RunningFakePardot, key_file: Path
) -> None:
    tokens = JwtBearerProvider(
        login_url=server.url,
        consumer_key=CONSUMER_KEY,
        username="someone@example.com",
        private_key_file=key_file,
    )
    with pytest.raises(ConfigurationError, match="approved"):
        await tokens.token()


async def post_assertion(http: httpx.AsyncClient, url: str, assertion: bytes | str) -> dict:
    answer = await http.post(
        f"{url}/services/oauth2/token",
        data={"grant_type": JWT_BEARER_GRANT, "assertion": _text(assertion)},
    )
    return answer.json()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def test_the_fake_checks_audience_expiry_and_issuer(
    server: RunningFakePardot, http: httpx.AsyncClient, keys: tuple[str, str], key_file: Path
) -> None:
    private = RSAKey.import_key(keys[0])
    now = int(time.time())

    def sign(**overrides: object) -> bytes | str:
        claims = {"issuer": CONSUMER_KEY, "audience": server.url, "subject": USERNAME}
        claims.update(overrides)  # type: ignore[arg-type]
        return JWTBearerGrant.sign(private, alg="RS256", expires_in=180, **claims)

    assert "access_token" in await post_assertion(http, server.url, sign())
    wrong_audience = await post_assertion(http, server.url, sign(audience="https://elsewhere"))
    assert wrong_audience == {"error": "invalid_grant", "error_description": "audience is invalid"}
    expired = await post_assertion(http, server.url, sign(issued_at=now - 900))
    assert expired["error_description"] == "expired authorization code"
    too_long = JWTBearerGrant.sign(
        private, CONSUMER_KEY, server.url, USERNAME, alg="RS256", expires_in=3600
    )
    assert (await post_assertion(http, server.url, too_long))["error"] == "invalid_grant"
    unknown = await post_assertion(http, server.url, sign(issuer="nobody"))
    assert unknown["error"] == "invalid_client_id"
    garbage = await post_assertion(http, server.url, "not.a.jwt")
    assert garbage == {"error": "invalid_grant", "error_description": "invalid assertion"}


def test_a_missing_key_file_is_a_clear_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the JWT private key file"):
        chosen_tokens(
            login_url=None,
            client_id=CONSUMER_KEY,
            client_secret=None,
            refresh_token=None,
            token_file=None,
            jwt_username=USERNAME,
            jwt_private_key_file=tmp_path / "missing.key",
        )
    with pytest.raises(ConfigurationError, match="needs"):
        chosen_tokens(
            login_url=None,
            client_id=CONSUMER_KEY,
            client_secret=None,
            refresh_token=None,
            token_file=None,
            jwt_username=USERNAME,
        )


def test_a_key_that_is_not_a_private_rsa_key_is_refused_at_startup(
    keys: tuple[str, str],
) -> None:
    for text in (keys[1], "-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----"):
        with pytest.raises(ConfigurationError, match="unencrypted RSA private key") as caught:
            JwtBearerProvider(
                login_url="https://login.salesforce.com",
                consumer_key=CONSUMER_KEY,
                username=USERNAME,
                private_key=text,
            )
        assert "nonsense" not in str(caught.value) and caught.value.__cause__ is None


def test_the_provider_repr_hides_the_key(key_file: Path) -> None:
    tokens = JwtBearerProvider(
        login_url="https://login.salesforce.com",
        consumer_key=CONSUMER_KEY,
        username=USERNAME,
        private_key_file=key_file,
    )
    assert "PRIVATE" not in repr(tokens) and "<key hidden>" in repr(tokens)
