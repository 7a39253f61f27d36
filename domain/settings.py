"""The seed's six destination settings and their validation rules, nothing operational."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from domain.errors import InvalidSettings
from domain.validation import describe_validation_error

BUSINESS_UNIT_ID = re.compile(r"^0Uv[0-9A-Za-z]{15}$")
DIGITS = re.compile(r"^[0-9]+$")
# Pardot field ids are identifiers; a space or a slash would corrupt the request path or form.
FIELD_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class DestinationSettings(BaseModel):
    """What a user configures for the destination, with the seed's names and rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_version: Literal[3, 4] = 4
    prospect_lookup_field_id: Annotated[str | None, Field(default=None)] = None
    use_user_id_as_lookup_value: bool = False
    account_id: str
    campaign_id: str | None = None
    business_unit_id: str

    @field_validator("prospect_lookup_field_id", "campaign_id", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("prospect_lookup_field_id")
    @classmethod
    def _lookup_field(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value in {"id", "fid"}:
            raise ValueError("must name a custom field; id and fid come from integrations.Pardot")
        if not FIELD_ID.match(value):
            raise ValueError("must be a Pardot field id (letters, digits, underscores)")
        return value

    @field_validator("account_id", "campaign_id")
    @classmethod
    def _digits(cls, value: str | None) -> str | None:
        if value is not None and not DIGITS.match(value):
            raise ValueError("must be digits only")
        return value

    @field_validator("business_unit_id")
    @classmethod
    def _business_unit(cls, value: str) -> str:
        if not BUSINESS_UNIT_ID.match(value):
            raise ValueError("must be 18 characters starting with 0Uv")
        return value

    @model_validator(mode="after")
    def _lookup_rules(self) -> DestinationSettings:
        if self.use_user_id_as_lookup_value and self.prospect_lookup_field_id is None:
            raise ValueError(
                "use_user_id_as_lookup_value needs prospect_lookup_field_id to say which field"
            )
        return self

    @property
    def lookup_field(self) -> str | None:
        """The lookup field in force: the seed applies it with API version 4 only."""
        return self.prospect_lookup_field_id if self.api_version == 4 else None

    def warnings(self) -> list[str]:
        """Settings that are valid but have no effect, for one warning at start-up."""
        if self.api_version == 3 and self.prospect_lookup_field_id is not None:
            return [
                "prospect_lookup_field_id (and use_user_id_as_lookup_value) only apply with "
                "API version 4: ignored, prospects are matched by email"
            ]
        return []

    @classmethod
    def parse(cls, values: dict[str, object]) -> DestinationSettings:
        """Validate raw values, turning pydantic's report into one line per bad setting."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise InvalidSettings(describe_validation_error(exc)) from None
