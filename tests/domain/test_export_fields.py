"""What an export of prospects asks for (`domain.index.export_fields`), for any account."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.index.export_fields import (
    MAX_EXPORT_FIELDS,
    CustomFieldExports,
    CustomFieldsLeftOut,
    asks_custom,
    check_carried,
    export_columns,
)
from domain.index.feed import KEY_FIELDS, IndexFeed
from domain.prospect import STANDARD_FIELDS, CustomField

custom_names = st.lists(
    st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(
        lambda n: n not in STANDARD_FIELDS and n not in KEY_FIELDS and n not in ("id", "grade")
    ),
    max_size=160,
    unique=True,
)


def feed_for(custom: list[str], lookup: str | None) -> IndexFeed:
    feed = IndexFeed(None, None, lookup_field=lookup, budget=None)  # type: ignore[arg-type]
    feed.note_custom_fields([CustomField(name, "Text") for name in custom])
    return feed


@given(custom=custom_names, pick=st.integers(0, 200), with_lookup=st.booleans(), ask=st.booleans())
def test_an_export_asks_what_pardot_allows_and_marks_the_rest_unknown(
    custom: list[str], pick: int, with_lookup: bool, ask: bool
) -> None:
    lookup = custom[pick % len(custom)] if custom and with_lookup else None
    feed = feed_for(custom, lookup)
    asked, unknown = export_columns(feed, custom=ask)
    wanted = set(feed.fields or ())
    assert asked[0] == "id" and len(set(asked)) == len(asked) <= MAX_EXPORT_FIELDS
    assert set(asked) - {"id"} | unknown == wanted and not set(asked) & unknown
    assert "notes" in unknown and "notes" not in asked
    assert set(KEY_FIELDS) <= set(asked)
    assert asks_custom(asked) == (ask and bool(custom))
    if ask and lookup is not None:
        assert lookup in asked  # first among the custom fields: never cut by the cap
    if not ask:
        assert set(custom) <= unknown


@given(custom=custom_names.filter(bool), drop=st.integers(0, 200))
def test_a_file_without_an_asked_custom_column_is_caught(custom: list[str], drop: int) -> None:
    asked, _ = export_columns(feed_for(custom, None), custom=True)
    row = dict.fromkeys(asked, "")
    check_carried(asked, [row])
    check_carried(asked, [])  # an empty file tells nothing
    missing = [n for n in asked if n in custom][drop % len([n for n in asked if n in custom])]
    del row[missing]
    try:
        check_carried(asked, [row])
    except CustomFieldsLeftOut:
        pass
    else:
        raise AssertionError("a file without an asked custom field passed")


def test_custom_fields_are_asked_until_refused_once() -> None:
    known = CustomFieldExports()
    assert known.asking()
    known.note(True)
    assert known.asking()
    known.note(False)
    assert not known.asking()
