"""The import plan (domain/sync/imports.py): which rows go by import, and what the files say.

Properties over drawn rows: every row is planned exactly once (an import or batches); an
import's files, read back as CSV, give each row's values exactly, with a blank only where the
row clears the field and `nullOverwrite` set exactly on the columns some row clears; no import
holds a prospect twice, nor more than 10 files, nor a file over the limit; v4 imports carry
only updates by id or fid; an import is made only for a set of at least `min_rows` rows.
"""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.ports import ImportColumn, ProspectWrite
from domain.sync.imports import (
    MAX_FILES,
    MIN_IMPORT_ROWS,
    importable,
    pays,
    plan_imports,
)

NAMES = ["first_name", "last_name", "company", "plan", "org_id"]
VALUES = st.one_of(
    st.just(""),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12),
    st.sampled_from(["a,b", 'say "hi"', "two\nlines", " padded ", " ", "\t"]),
)
FIELDS = st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=3)


@st.composite
def rows(draw: st.DrawFn, version: int) -> list[ProspectWrite]:
    drawn: list[ProspectWrite] = []
    for _ in range(draw(st.integers(0, 40))):
        fields = draw(FIELDS)
        if version >= 4:
            kind = draw(st.sampled_from(["id", "id", "fid", "create", "multi"]))
            if kind == "create":
                drawn.append(ProspectWrite("email", draw(_emails), fields, mode="create"))
            elif kind == "multi":
                drawn.append(ProspectWrite("id", draw(_ids), {"plan": ("a", "b")}, mode="update"))
            else:
                key = draw(_ids) if kind == "id" else f"00Q{draw(_ids)}"
                drawn.append(ProspectWrite(kind, key, fields, mode="update"))  # type: ignore[arg-type]
        else:
            create = draw(st.dictionaries(st.just("campaign_id"), st.just("7"), max_size=1))
            drawn.append(ProspectWrite("email", draw(_emails), fields, create))
    return drawn


_ids = st.integers(1, 30).map(str)
_emails = st.sampled_from(["a@x.io", "A@X.io", "b@x.io", "c@x.io", "d@x.io", "e@x.io"]).flatmap(
    lambda e: st.integers(0, 6).map(lambda n: e.replace("@", f"{n}@"))
)


def read(files: tuple[bytes, ...]) -> tuple[list[str], list[list[str]]]:
    headers, lines = set(), []
    for data in files:
        header, *body = list(csv.reader(io.StringIO(data.decode(), newline="")))
        headers.add(tuple(header))
        lines.extend(body)
    assert len(headers) == 1, "every file of an import has the same header row"
    return list(headers.pop()), lines


@settings(max_examples=300, deadline=None)
@given(
    version=st.sampled_from([3, 4]),
    data=st.data(),
    min_rows=st.integers(1, 6),
    max_file_bytes=st.integers(150, 400),
)
def test_each_row_is_planned_once_and_its_files_say_exactly_what_it_writes(
    version: int, data: st.DataObject, min_rows: int, max_file_bytes: int
) -> None:
    drawn = data.draw(rows(version))
    plan = plan_imports(drawn, version=version, min_rows=min_rows, max_file_bytes=max_file_bytes)
    carried = [p for planned in plan.imports for p in planned.rows]
    assert sorted(carried + plan.by_batches) == list(range(len(drawn)))
    for planned in plan.imports:
        assert 1 <= len(planned.files) <= MAX_FILES
        assert all(len(f) <= max_file_bytes for f in planned.files)
        header, lines = read(planned.files)
        assert header == [c.field for c in planned.columns]
        assert planned.columns[0].field == planned.match
        assert len(lines) == len(planned.rows)
        members = [drawn[p] for p in planned.rows]
        keys = [m.key.lower() if m.by == "email" else m.key for m in members]
        assert len(set(keys)) == len(keys), "one import never holds a prospect twice"
        for row, line in zip(members, lines, strict=True):
            assert importable(row, version)
            assert all(v == "" or v.strip() for v in line), "spaces alone would read as blank"
            assert line[0] == row.key
            columns = planned.columns[1:]
            written = {c.field: v for c, v in zip(columns, line[1:], strict=True)}
            overwrite = {c.field for c in columns if c.overwrite}
            assert {n: written[n] for n in overwrite} == row.fields
            assert {n: written[n] for n in written if n not in overwrite} == {
                n: v for n, v in row.create_fields.items() if n not in row.fields
            }
        for column in planned.columns[1:]:
            clears = any(m.fields.get(column.field) == "" for m in members)
            assert column.null_overwrite == (column.overwrite and clears)
        if version >= 4:
            assert planned.match in ("prospect_id", "salesforce_fid")
            assert all(m.mode == "update" for m in members)
        else:
            assert planned.match == "email"
    shapes: dict[tuple[str, frozenset[str]], int] = {}
    for planned in plan.imports:
        shape = (planned.match, frozenset(c.field for c in planned.columns[1:] if c.overwrite))
        shapes[shape] = shapes.get(shape, 0) + len(planned.rows)
    assert all(n >= min_rows for n in shapes.values())


def test_a_blank_overwrites_only_in_a_column_that_an_event_clears() -> None:
    drawn = [
        ProspectWrite(
            "id", str(i), {"company": "" if i == 3 else "Acme", "plan": "pro"}, mode="update"
        )
        for i in range(1, 6)
    ]
    [planned] = plan_imports(drawn, version=4, min_rows=5).imports
    assert planned.columns == (
        ImportColumn("prospect_id", overwrite=False, null_overwrite=False),
        ImportColumn("company", overwrite=True, null_overwrite=True),
        ImportColumn("plan", overwrite=True, null_overwrite=False),
    )


def test_v3_fields_for_new_prospects_only_are_columns_that_do_not_overwrite() -> None:
    drawn = [
        ProspectWrite("email", f"p{i}@x.io", {"first_name": "P"}, {"campaign_id": "7"})
        for i in range(4)
    ]
    [planned] = plan_imports(drawn, version=3, min_rows=4).imports
    assert planned.columns[-1] == ImportColumn("campaign_id", overwrite=False, null_overwrite=False)
    assert planned.files[0].decode().splitlines()[:2] == [
        "email,first_name,campaign_id",
        "p0@x.io,P,7",
    ]


def test_an_import_pays_from_the_default_threshold_on() -> None:
    assert pays(MIN_IMPORT_ROWS) and not pays(MIN_IMPORT_ROWS - 1)
    drawn = [ProspectWrite("id", str(i), {"plan": "pro"}, mode="update") for i in range(700)]
    assert len(plan_imports(drawn, version=4).imports) == 1
    assert plan_imports(drawn[: MIN_IMPORT_ROWS - 1], version=4).imports == []


def test_a_set_larger_than_ten_files_makes_several_imports() -> None:
    drawn = [ProspectWrite("id", str(1000 + i), {"plan": "pro"}, mode="update") for i in range(25)]
    header_and_row = len("prospect_id,plan\r\n1000,pro\r\n")
    plan = plan_imports(drawn, version=4, min_rows=1, max_file_bytes=header_and_row)
    assert [len(p.files) for p in plan.imports] == [10, 10, 5]
    assert [p for planned in plan.imports for p in planned.rows] == list(range(25))
