"""The service's configuration: the seed's six settings plus what running it needs.

Read from environment variables, then an optional `.env` file, then an optional TOML file
(`pardot-destination.toml`, or the path in PARDOT_DESTINATION_CONFIG), via pydantic-settings.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from domain.errors import InvalidSettings
from domain.settings import DestinationSettings
from domain.settlement import DEFAULT_BACKOFF_MAX
from domain.validation import describe_validation_error

CONFIG_FILE_ENV = "PARDOT_DESTINATION_CONFIG"
BATCHING_NEEDS_A_KEY = (
    "DESTINATION_WEBHOOK_BATCHING=true needs DESTINATION_WRITE_KEY: a batch's signature covers "
    "only its first event, so the write key in the Authorization header must vouch for the rest"
)
MAX_LEASE_SECONDS = 60.0
# A Pardot call's longest wait, unless PARDOT_CALL_TIMEOUT_SECONDS says otherwise; never more
# than three quarters of the lease: a renewal comes every quarter, so a call may start at any
# moment and still end before another node may take the lease.
DEFAULT_CALL_TIMEOUT_SECONDS = 5.0
DEFAULT_CALL_SHARE_OF_LEASE = 0.75
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
NO_ADMIN_KEY_WARNING = (
    "DESTINATION_ADMIN_KEY is not set: /status and /metrics are open to anyone who can reach {host}"
)
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class TrackingConfig:
    """What the browser script needs. An empty or missing account id turns tracking off."""

    account_id: str | None
    campaign_id: str | None = None
    # Scheme and host only: pi.pardot.com, a first-party tracker domain, or a local fake.
    tracker_url: str = "https://pi.pardot.com"

    def __post_init__(self) -> None:
        for name in ("account_id", "campaign_id"):
            value = getattr(self, name)
            if value and not _DIGITS.fullmatch(value):
                raise ValueError(f"{name} must be digits only")
        url = urlsplit(self.tracker_url)
        extra = url.path.strip("/") or url.query or url.fragment
        if url.scheme not in {"http", "https"} or not url.netloc or extra:
            raise ValueError("tracker_url must be a scheme and host, like https://pi.pardot.com")


def _env(name: str, *default: Any, **constraints: Any) -> Any:
    """A setting read from the variable `name`, or from `name.lower()` in the TOML file."""
    return Field(*default, validation_alias=AliasChoices(name, name.lower()), **constraints)


class ServiceConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, frozen=True
    )

    # The seed's six settings.
    api_version: Literal["3", "4", "auto"] = _env("PARDOT_API_VERSION", "auto")
    lookup_field_id: str | None = _env("PARDOT_LOOKUP_FIELD_ID", None)
    use_user_id_as_lookup_value: bool = _env("PARDOT_USE_USER_ID_AS_LOOKUP_VALUE", False)
    account_id: str = _env("PARDOT_ACCOUNT_ID")
    campaign_id: str | None = _env("PARDOT_CAMPAIGN_ID", None)
    business_unit_id: str = _env("PARDOT_BUSINESS_UNIT_ID")

    # Where Pardot and Salesforce are, and how to authenticate.
    pardot_base_url: str = _env("PARDOT_BASE_URL", "https://pi.pardot.com")
    salesforce_login_url: str = _env("SALESFORCE_LOGIN_URL", "https://login.salesforce.com")
    salesforce_client_id: str | None = _env("SALESFORCE_CLIENT_ID", None)
    salesforce_client_secret: SecretStr | None = _env("SALESFORCE_CLIENT_SECRET", None)
    salesforce_refresh_token: SecretStr | None = _env("SALESFORCE_REFRESH_TOKEN", None)
    token_file: str | None = _env("SALESFORCE_TOKEN_FILE", None)
    jwt_username: str | None = _env("SALESFORCE_JWT_USERNAME", None)
    jwt_private_key_file: str | None = _env("SALESFORCE_JWT_PRIVATE_KEY_FILE", None)
    static_access_token: SecretStr | None = _env("PARDOT_ACCESS_TOKEN", None)
    tracker_url: str = _env("PARDOT_TRACKER_URL", "https://pi.pardot.com")
    max_concurrency: int = _env("PARDOT_MAX_CONCURRENCY", 5, ge=1, le=5)
    retry_wait_max: float = _env("PARDOT_RETRY_WAIT_MAX", 10.0, gt=0)
    call_timeout: float | None = _env("PARDOT_CALL_TIMEOUT_SECONDS", None, gt=0)
    # The campaign of prospects the service creates. The seed's campaign id is for the
    # browser tracking code only ("not used if you are sending data from a server side
    # source"), so this one is operational and lives here, not among the six.
    create_campaign_id: str | None = _env("PARDOT_CREATE_CAMPAIGN_ID", None)
    # Pardot's daily call budget and the zone whose midnight ends the day (PARDOT_API.md).
    daily_api_limit: int = _env("PARDOT_DAILY_API_LIMIT", 25_000, ge=1)
    account_timezone: str = _env("PARDOT_ACCOUNT_TIMEZONE", "UTC")
    # The zone of the Pardot user the API calls run as: exports write their dates in it
    # (PARDOT_API.md). Unset: the account's.
    export_timezone: str | None = _env("PARDOT_EXPORT_TIMEZONE", None)

    # The service itself.
    write_keys: Annotated[tuple[SecretStr, ...], NoDecode] = _env("DESTINATION_WRITE_KEY", ())
    shared_secret: SecretStr | None = _env("DESTINATION_SHARED_SECRET", None)
    # Protects /status and /metrics (Bearer, or Basic with it as the password).
    admin_key: SecretStr | None = _env("DESTINATION_ADMIN_KEY", None)
    webhook_batching: bool = _env("DESTINATION_WEBHOOK_BATCHING", False)
    queue_url: str = _env("DESTINATION_QUEUE_URL", "sqlite:///pardot-destination.db")
    # Connections each process keeps to a PostgreSQL store (one more holds its locks).
    queue_pool_size: int = _env("DESTINATION_QUEUE_POOL_SIZE", 10, ge=2, le=100)
    # How long a request or a delivery step waits for a PostgreSQL connection before it gives
    # up: while the server is gone, the door's 503 comes after this.
    queue_wait_seconds: float = _env("DESTINATION_QUEUE_WAIT_SECONDS", 30.0, gt=0, le=300)
    destination_keys: Annotated[tuple[str, ...], NoDecode] = _env(
        "DESTINATION_INTEGRATION_KEYS", ("Pardot",)
    )
    max_pending: int = _env("DESTINATION_MAX_PENDING", 1_000_000, ge=1)
    lease_seconds: float = _env("DESTINATION_LEASE_SECONDS", 10.0, gt=0)
    max_attempts: int = _env("DESTINATION_MAX_ATTEMPTS", 12, ge=1)
    # How often an idle worker looks for events. `serve`'s worker is also woken by each put
    # (DESTINATION_WAKE_ON_PUT), a worker on PostgreSQL by a notification; the poll is what
    # bounds the wait when neither can reach it (a separate worker on SQLite).
    poll_seconds: float = _env("DESTINATION_POLL_SECONDS", 0.25, gt=0)
    wake_on_put: bool = _env("DESTINATION_WAKE_ON_PUT", True)
    # Batches a worker has in hand at once: one is leased and resolved while another waits on
    # Pardot. Pardot's 5 calls in flight stay the bound whatever this is.
    batches_in_flight: int = _env("DESTINATION_BATCHES_IN_FLIGHT", 3, ge=1, le=16)
    retry_initial_seconds: float = _env("DESTINATION_RETRY_INITIAL_SECONDS", 5.0, gt=0)
    # The longest wait between two attempts of an event: the doubling stops here.
    retry_max_seconds: float = _env("DESTINATION_RETRY_MAX_SECONDS", DEFAULT_BACKOFF_MAX, gt=0)
    configuration_retry_seconds: float = _env("DESTINATION_CONFIG_RETRY_SECONDS", 30.0, gt=0)
    retention_days: float = _env("DESTINATION_RETENTION_DAYS", 7.0, gt=0)
    index_refresh_seconds: float = _env("DESTINATION_INDEX_REFRESH_SECONDS", 60.0, gt=0)
    index_lag_seconds: float = _env("DESTINATION_INDEX_LAG_SECONDS", 0.0, ge=0)
    change_detection: bool = _env("DESTINATION_CHANGE_DETECTION", True)
    # The bulk lane (Pardot's Import API) for large backlogs: `off` keeps batches of 50 only.
    bulk: Literal["auto", "off"] = _env("DESTINATION_BULK", "auto")
    # The fewest rows an import carries; unset, where an import's fixed calls beat batches.
    bulk_min_rows: int | None = _env("DESTINATION_BULK_MIN_ROWS", None, ge=1)
    # A submitted import cannot be cancelled: past this, `status` and the log warn.
    import_timeout_seconds: float = _env("DESTINATION_IMPORT_TIMEOUT_SECONDS", 1800.0, gt=0)
    # The first wait before reading an import's or export's state (then doubling, at most
    # 60 s).
    import_poll_seconds: float = _env("DESTINATION_IMPORT_POLL_SECONDS", 5.0, gt=0)
    # The account's import files (batches) a day, shared by every process on the store.
    import_files_per_day: int = _env("DESTINATION_IMPORT_FILES_PER_DAY", 1000, ge=0)
    # How fast the account's exports go, as observed: what the choice between exports and
    # the paged scan to fill the index is costed with (domain.bulk_cost).
    export_rows_per_second: float = _env("DESTINATION_EXPORT_ROWS_PER_SECOND", 1_000.0, gt=0)
    export_queue_seconds: float = _env("DESTINATION_EXPORT_QUEUE_SECONDS", 60.0, ge=0)
    # Exports fill the index of any account this large; unset, wherever they cost less.
    export_min_prospects: int | None = _env("DESTINATION_EXPORT_MIN_PROSPECTS", None, ge=1)

    @field_validator("write_keys", "destination_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("lease_seconds")
    @classmethod
    def _lease_seconds(cls, value: float) -> float:
        if value > MAX_LEASE_SECONDS:
            raise ValueError(
                f"must be at most {MAX_LEASE_SECONDS:g} seconds: it is how long the events of "
                "a worker that died wait before another takes them over (the worker renews "
                "its lease every few seconds while it works, so a short one is safe)"
            )
        return value

    @field_validator("tracker_url")
    @classmethod
    def _tracker_url(cls, value: str) -> str:
        TrackingConfig(None, tracker_url=value)  # raises ValueError saying what is wrong
        return value

    @field_validator("account_timezone", "export_timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as America/New_York"
            ) from None
        return value.strip()

    @property
    def account_zone(self) -> ZoneInfo:
        return ZoneInfo(self.account_timezone)

    @property
    def export_zone(self) -> ZoneInfo:
        """The zone of the dates in export files: PARDOT_EXPORT_TIMEZONE, else the account's."""
        return ZoneInfo(self.export_timezone or self.account_timezone)

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str) -> str:
        if not is_postgres_url(value):
            sqlite_path_from_url(value)  # raises ValueError naming the accepted forms
        return value

    @field_validator("lookup_field_id", "campaign_id", "create_campaign_id", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("create_campaign_id")
    @classmethod
    def _campaign_digits(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().isdigit():
            raise ValueError("must be digits only")
        return value.strip() if value is not None else None

    def startup_warnings(self, settings: DestinationSettings) -> list[str]:
        """Valid settings that will not do what their owner may expect, named as variables."""
        warnings = [_with_env_names(w) for w in settings.warnings()]
        if self.campaign_id is not None and self.create_campaign_id is None:
            warnings.append(
                "PARDOT_CAMPAIGN_ID is used by the browser tracking code only; prospects the "
                "service creates get Pardot's default campaign unless PARDOT_CREATE_CAMPAIGN_ID "
                "is set"
            )
        return warnings

    @property
    def call_timeout_seconds(self) -> float:
        """How long one Pardot request may take (connect, send, each wait for the answer)."""
        if self.call_timeout is not None:
            return self.call_timeout
        return min(DEFAULT_CALL_TIMEOUT_SECONDS, self.lease_seconds * DEFAULT_CALL_SHARE_OF_LEASE)

    @model_validator(mode="after")
    def _calls_end_within_a_lease(self) -> ServiceConfig:
        if self.call_timeout is not None and self.call_timeout >= self.lease_seconds:
            raise ValueError(
                f"PARDOT_CALL_TIMEOUT_SECONDS ({self.call_timeout:g} s) must be shorter than "
                f"DESTINATION_LEASE_SECONDS ({self.lease_seconds:g} s): a Pardot call begun "
                "while a worker holds its events must end before another node may take them "
                "over, or both would write the same people to Pardot"
            )
        return self

    @model_validator(mode="after")
    def _batching_needs_a_key(self) -> ServiceConfig:
        if self.webhook_batching and not self.write_keys:
            raise ValueError(BATCHING_NEEDS_A_KEY)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = os.environ.get(CONFIG_FILE_ENV, "pardot-destination.toml")
        toml = TomlConfigSettingsSource(settings_cls, toml_file=toml_path)
        return (init_settings, env_settings, dotenv_settings, toml)

    def destination(self, api_version: int | None = None) -> DestinationSettings:
        """The six seed settings, with the API version detected when it is `auto`."""
        version = api_version if api_version is not None else self.fixed_api_version
        return DestinationSettings.parse(
            {
                "api_version": version or 4,
                "prospect_lookup_field_id": self.lookup_field_id,
                "use_user_id_as_lookup_value": self.use_user_id_as_lookup_value,
                "account_id": self.account_id,
                "campaign_id": self.campaign_id,
                "business_unit_id": self.business_unit_id,
            }
        )

    @property
    def fixed_api_version(self) -> int | None:
        return None if self.api_version == "auto" else int(self.api_version)

    @property
    def queue_path(self) -> Path:
        return sqlite_path_from_url(self.queue_url)

    @property
    def uses_postgres(self) -> bool:
        """The store is a PostgreSQL database (many nodes) rather than a SQLite file."""
        return is_postgres_url(self.queue_url)


def is_postgres_url(url: str) -> bool:
    return url.partition("://")[0] in ("postgresql", "postgres") and "://" in url


def sqlite_path_from_url(url: str) -> Path:
    """`sqlite:///relative.db` or `sqlite:////absolute.db` (SQLAlchemy's spelling) to a path."""
    scheme, sep, rest = url.partition("://")
    if scheme != "sqlite" or not sep or not rest.startswith("/") or rest == "/":
        shown = url if scheme == "sqlite" else f"{scheme}://..."  # never a password
        raise ValueError(
            f"unsupported queue URL {shown!r}: expected sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or postgresql://user@host:5432/database"
        )
    return Path(rest[1:])


# Setting names as the domain spells them, and as the user does (the variable).
ENV_NAMES: dict[str, str] = {
    name: str(field.validation_alias.choices[0])  # type: ignore[union-attr]
    for name, field in ServiceConfig.model_fields.items()
} | {
    "prospect_lookup_field_id": "PARDOT_LOOKUP_FIELD_ID",
    "use_user_id_as_lookup_value": "PARDOT_USE_USER_ID_AS_LOOKUP_VALUE",
}


def load_config(**overrides: Any) -> ServiceConfig:
    """Read the configuration, or raise InvalidSettings naming each bad variable."""
    try:
        config = ServiceConfig(**overrides)
        config.destination()
    except ValidationError as exc:
        raise InvalidSettings(_with_env_names(describe_validation_error(exc))) from None
    except InvalidSettings as exc:
        raise InvalidSettings(_with_env_names(str(exc))) from None
    return config


def _with_env_names(message: str) -> str:
    """Name settings as the user spells them: the environment variable."""
    return re.sub(
        r"\b(" + "|".join(sorted(ENV_NAMES, key=len, reverse=True)) + r")\b",
        lambda match: ENV_NAMES[match.group(1)],
        message,
    ).removeprefix("value: ")


def exposure_problem(host: str, config: ServiceConfig, *, insecure_open: bool) -> str | None:
    """Why `serve` must not listen on `host` as configured, or None.

    Without DESTINATION_WRITE_KEY anyone who can reach the port may post events (a shared
    secret protects only /webhook). On loopback only this machine can, which the demo needs.
    """
    if config.write_keys or insecure_open or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host or 'every interface'} without DESTINATION_WRITE_KEY: "
        "anyone who can reach it could post events. Set DESTINATION_WRITE_KEY, listen on "
        "127.0.0.1, or pass --insecure-open to accept events from anyone"
    )


def admin_exposure_warning(host: str, config: ServiceConfig) -> str | None:
    """The one warning `serve` gives when it listens beyond loopback without an admin key."""
    key = config.admin_key
    if (key.get_secret_value().strip() if key is not None else "") or is_loopback(host):
        return None
    return NO_ADMIN_KEY_WARNING.format(host=host or "every interface")


def is_loopback(host: str) -> bool:
    """Literal loopback addresses and `localhost`; any other name may reach the network."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
