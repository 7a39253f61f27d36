"""The service's configuration: the seed's six settings plus what running it needs.

Read from environment variables, then an optional `.env` file, then an optional TOML file
(`pardot-destination.toml`, or the path in PARDOT_DESTINATION_CONFIG), via pydantic-settings.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from adapters.sqlite_db import sqlite_path_from_url
from domain.errors import InvalidSettings
from domain.settings import DestinationSettings, describe_validation_error

CONFIG_FILE_ENV = "PARDOT_DESTINATION_CONFIG"


def _env(name: str, *default: Any) -> Any:
    return Field(*default, validation_alias=AliasChoices(name, name.lower()))


class ServiceConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, frozen=True
    )

    api_version: Literal["3", "4", "auto"] = Field(
        "auto", validation_alias=AliasChoices("PARDOT_API_VERSION", "pardot_api_version")
    )
    lookup_field_id: str | None = _env("PARDOT_LOOKUP_FIELD_ID", None)
    use_user_id_as_lookup_value: bool = Field(
        False,
        validation_alias=AliasChoices(
            "PARDOT_USE_USER_ID_AS_LOOKUP_VALUE", "pardot_use_user_id_as_lookup_value"
        ),
    )
    account_id: str = _env("PARDOT_ACCOUNT_ID")
    campaign_id: str | None = Field(
        None, validation_alias=AliasChoices("PARDOT_CAMPAIGN_ID", "pardot_campaign_id")
    )
    business_unit_id: str = _env("PARDOT_BUSINESS_UNIT_ID")

    pardot_base_url: str = Field(
        "https://pi.pardot.com",
        validation_alias=AliasChoices("PARDOT_BASE_URL", "pardot_base_url"),
    )
    salesforce_login_url: str = Field(
        "https://login.salesforce.com",
        validation_alias=AliasChoices("SALESFORCE_LOGIN_URL", "salesforce_login_url"),
    )
    salesforce_client_id: str | None = Field(
        None, validation_alias=AliasChoices("SALESFORCE_CLIENT_ID", "salesforce_client_id")
    )
    salesforce_client_secret: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("SALESFORCE_CLIENT_SECRET", "salesforce_client_secret"),
    )
    salesforce_refresh_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("SALESFORCE_REFRESH_TOKEN", "salesforce_refresh_token"),
    )
    token_file: str | None = Field(
        None, validation_alias=AliasChoices("SALESFORCE_TOKEN_FILE", "salesforce_token_file")
    )
    jwt_username: str | None = Field(
        None, validation_alias=AliasChoices("SALESFORCE_JWT_USERNAME", "salesforce_jwt_username")
    )
    jwt_private_key_file: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "SALESFORCE_JWT_PRIVATE_KEY_FILE", "salesforce_jwt_private_key_file"
        ),
    )
    static_access_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("PARDOT_ACCESS_TOKEN", "pardot_access_token")
    )
    write_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), validation_alias=AliasChoices("DESTINATION_WRITE_KEY", "destination_write_key")
    )
    shared_secret: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DESTINATION_SHARED_SECRET", "destination_shared_secret"),
    )
    queue_url: str = Field(
        "sqlite:///pardot-destination.db",
        validation_alias=AliasChoices("DESTINATION_QUEUE_URL", "destination_queue_url"),
    )
    destination_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        ("Pardot",),
        validation_alias=AliasChoices("DESTINATION_INTEGRATION_KEYS", "destination_keys"),
    )
    tracker_url: str = Field(
        "https://pi.pardot.com",
        validation_alias=AliasChoices("PARDOT_TRACKER_URL", "pardot_tracker_url"),
    )
    max_concurrency: int = Field(
        5, ge=1, le=5, validation_alias=AliasChoices("PARDOT_MAX_CONCURRENCY", "max_concurrency")
    )
    max_pending: int = Field(
        1_000_000,
        ge=1,
        validation_alias=AliasChoices("DESTINATION_MAX_PENDING", "max_pending"),
    )

    retry_wait_max: float = Field(
        10.0, gt=0, validation_alias=AliasChoices("PARDOT_RETRY_WAIT_MAX", "retry_wait_max")
    )
    lease_seconds: float = Field(
        300.0, gt=0, validation_alias=AliasChoices("DESTINATION_LEASE_SECONDS", "lease_seconds")
    )
    max_attempts: int = Field(
        12, ge=1, validation_alias=AliasChoices("DESTINATION_MAX_ATTEMPTS", "max_attempts")
    )
    retry_initial_seconds: float = Field(
        5.0,
        gt=0,
        validation_alias=AliasChoices("DESTINATION_RETRY_INITIAL_SECONDS", "retry_initial"),
    )

    @field_validator("write_keys", "destination_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str) -> str:
        sqlite_path_from_url(value)  # raises ValueError naming both accepted forms
        return value

    @field_validator("lookup_field_id", "campaign_id", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

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


ENV_NAMES = {
    "queue_url": "DESTINATION_QUEUE_URL",
    "api_version": "PARDOT_API_VERSION",
    "lookup_field_id": "PARDOT_LOOKUP_FIELD_ID",
    "use_user_id_as_lookup_value": "PARDOT_USE_USER_ID_AS_LOOKUP_VALUE",
    "account_id": "PARDOT_ACCOUNT_ID",
    "campaign_id": "PARDOT_CAMPAIGN_ID",
    "business_unit_id": "PARDOT_BUSINESS_UNIT_ID",
    "prospect_lookup_field_id": "PARDOT_LOOKUP_FIELD_ID",
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
