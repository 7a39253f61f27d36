"""The Salesforce refresh token on disk, where `connect` leaves it and the service finds it.

One small JSON file readable by its owner only (mode 0600), replaced atomically so that a
crash or a concurrent reader never sees half a file. A refresh token is as good as a
password to the Pardot account, so the store refuses a file others can read, and nothing
here ever puts the token into a repr, a log line or an exception message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from domain.errors import ConfigurationError

log = logging.getLogger(__name__)

DEFAULT_TOKEN_FILE = Path("~/.config/pardot-destination/tokens.json")
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
_LOOSE_BITS = stat.S_IRWXG | stat.S_IRWXO


def now_millis() -> str:
    """A timestamp the way Salesforce writes `issued_at`: epoch milliseconds as text."""
    return str(int(time.time() * 1000))


@dataclass(frozen=True)
class StoredTokens:
    """What `connect` learned: the refresh token and where it is valid."""

    refresh_token: str = field(repr=False)
    instance_url: str
    login_url: str
    client_id: str
    issued_at: str

    def __repr__(self) -> str:
        return (
            f"StoredTokens(refresh_token=<hidden>, instance_url={self.instance_url!r}, "
            f"login_url={self.login_url!r}, client_id={self.client_id!r}, "
            f"issued_at={self.issued_at!r})"
        )

    def with_refresh_token(self, refresh_token: str) -> StoredTokens:
        return replace(self, refresh_token=refresh_token, issued_at=now_millis())


class TokenStore:
    """A token file; `load()` answers None until `connect` has written one."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path if path is not None else DEFAULT_TOKEN_FILE).expanduser()

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r})"

    def load(self) -> StoredTokens | None:
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            return None
        if os.name == "posix" and mode & _LOOSE_BITS:
            raise ConfigurationError(
                f"token file {self.path} can be read by other users "
                f"(mode {stat.S_IMODE(mode):04o}): run `chmod 600 {self.path}` or "
                "`pardot-destination connect` again"
            )
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            tokens = StoredTokens(
                refresh_token=str(data["refresh_token"]),
                instance_url=str(data.get("instance_url") or ""),
                login_url=str(data["login_url"]),
                client_id=str(data["client_id"]),
                issued_at=str(data.get("issued_at") or ""),
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            # The message names the problem's type only: the file holds a secret.
            raise ConfigurationError(
                f"token file {self.path} is unreadable ({type(error).__name__}): "
                "run `pardot-destination connect` to write a new one"
            ) from None
        if not tokens.refresh_token:
            raise ConfigurationError(
                f"token file {self.path} holds no refresh token: run "
                "`pardot-destination connect` to write a new one"
            )
        return tokens

    def refresh_token(self) -> str | None:
        """The refresh token stored now (None when there is no file yet)."""
        tokens = self.load()
        return None if tokens is None else tokens.refresh_token

    def save(self, tokens: StoredTokens) -> None:
        """Replace the file atomically with a new one only its owner can read."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
        with contextlib.suppress(FileNotFoundError):
            old_mode = self.path.stat().st_mode
            if os.name == "posix" and old_mode & _LOOSE_BITS:
                log.warning(
                    "token file %s was readable by other users (mode %04o); "
                    "its replacement is mode 0600",
                    self.path,
                    stat.S_IMODE(old_mode),
                )
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=directory
        )
        try:
            if os.name == "posix":
                os.fchmod(descriptor, FILE_MODE)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(asdict(tokens), file, indent=2)
                file.write("\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _sync_directory(directory)
        log.info("Salesforce tokens saved to %s", self.path)

    def save_refresh_token(
        self, refresh_token: str, *, login_url: str, client_id: str, instance_url: str = ""
    ) -> None:
        """Persist a rotated refresh token, keeping what the file knew about the org."""
        try:
            current = self.load()
        except ConfigurationError:
            current = None  # a broken or loose file is replaced by a good one
        if current is None:
            current = StoredTokens(refresh_token, instance_url, login_url, client_id, "")
        self.save(current.with_refresh_token(refresh_token))


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); best effort elsewhere."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
