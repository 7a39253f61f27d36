"""The account's imports and exports, as the fake's state holds them (one name for both)."""

from contracts.fake_pardot_export import ExportBook
from contracts.fake_pardot_export import advance as advance_exports
from contracts.fake_pardot_import import ImportBook
from contracts.fake_pardot_import import advance as advance_imports

__all__ = ["ExportBook", "ImportBook", "advance_exports", "advance_imports"]
