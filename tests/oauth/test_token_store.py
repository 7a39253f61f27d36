"""The token file: owner-only, atomic, never shows the token."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from adapters.salesforce.token_file import DEFAULT_TOKEN_FILE, StoredTokens, TokenStore
from domain.errors import ConfigurationError

SECRET = "5Aep861-a-very-secret-refresh-token"


def tokens(refresh_token: str = SECRET) -> StoredTokens:
    return StoredTokens(
        refresh_token=refresh_token,
        instance_url="https://example.my.salesforce.com",
        login_url="https://login.salesforce.com",
        client_id="3MVG9-client",
        issued_at="1700000000000",
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_writes_an_owner_only_file_and_load_reads_it_back(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "tokens.json"
    store = TokenStore(path)
    assert store.load() is None
    assert store.refresh_token() is None
    store.save(tokens())
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert store.load() == tokens()
    assert store.refresh_token() == SECRET
    assert json.loads(path.read_text())["client_id"] == "3MVG9-client"
    assert [p.name for p in path.parent.iterdir()] == ["tokens.json"]  # no temp file left


def test_save_replaces_a_loose_file_with_an_owner_only_one(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("{}")
    os.chmod(path, 0o644)
    TokenStore(path).save(tokens("new"))
    assert mode(path) == 0o600
    assert TokenStore(path).refresh_token() == "new"


def test_a_file_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(tokens())
    os.chmod(store.path, 0o640)
    with pytest.raises(ConfigurationError) as caught:
        store.load()
    assert f"chmod 600 {store.path}" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_broken_file_is_reported_without_its_content(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(f'{{"refresh_token": "{SECRET}"')  # truncated JSON
    os.chmod(path, 0o600)
    with pytest.raises(ConfigurationError) as caught:
        TokenStore(path).load()
    assert "pardot-destination connect" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_rotation_keeps_the_org_and_replaces_the_token(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(tokens())
    store.save_refresh_token("rotated", login_url="ignored", client_id="ignored")
    loaded = store.load()
    assert loaded is not None
    assert loaded.refresh_token == "rotated"
    assert loaded.login_url == "https://login.salesforce.com"
    assert loaded.client_id == "3MVG9-client"
    assert loaded.issued_at != "1700000000000"


def test_reprs_hide_the_token(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    store.save(tokens())
    assert SECRET not in repr(tokens()) and "<hidden>" in repr(tokens())
    assert SECRET not in str(tokens())
    assert SECRET not in repr(store) and SECRET not in repr(store.load())


def test_default_path_is_in_the_users_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert TokenStore().path == tmp_path / ".config" / "pardot-destination" / "tokens.json"
    assert DEFAULT_TOKEN_FILE.name == "tokens.json"
