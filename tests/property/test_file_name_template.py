"""Properties of file-name templates (%FILE_NAME%, %FILE_EXT%, %PART%)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import example, given, strategies as st

from destinations import InvalidTemplate, ObjectKeyTooLong, object_key
from destinations._template import DEFAULT_FILE_NAME_TEMPLATE, FileNameTemplate, sanitize_segment
from tests.strategies import values

NOW = datetime(2026, 11, 27, 13, 5)
names = st.one_of(values.map(str), st.sampled_from(["a.json", ".env", "x.tar.gz", "..", "a."]))


def _name(template: FileNameTemplate, file_name: str, part: int | None = None) -> str:
    return template.expand_name(
        file_name, part=part, collection_id="c", collection_name="n", result_set_id="r", now=NOW
    )


@given(names)
@example("orders.json")
@example("a/b.json")  # a separator in the name stays inside one segment
@example("x.a/b")  # a dot before the separator is not an extension
@example("..")
@example("")
def test_the_default_template_names_files_as_before(file_name: str) -> None:
    template = FileNameTemplate(DEFAULT_FILE_NAME_TEMPLATE)
    try:
        expected = object_key("", file_name)
    except ObjectKeyTooLong:
        return
    assert _name(template, file_name) == expected == sanitize_segment(file_name)


@given(names, st.integers(min_value=1, max_value=99_999))
@example("orders.jsonl", 1)
@example("noext", 12)
def test_parts_are_numbered_and_the_extension_kept(file_name: str, part: int) -> None:
    template = FileNameTemplate("%FILE_NAME%-%PART%%FILE_EXT%")
    try:
        out = _name(template, file_name, part)
    except ObjectKeyTooLong:
        return
    whole = sanitize_segment(file_name)
    assert "/" not in out
    assert f"-{part:05d}" in out
    stem, dot, ext = whole.rpartition(".")
    if dot and stem:
        assert out == f"{stem}-{part:05d}.{ext}"
    else:
        assert out == f"{whole}-{part:05d}"


@given(values, values)
def test_values_stay_one_segment_each(cid: object, name: object) -> None:
    template = FileNameTemplate("%COLLECTION_ID%/%FILE_NAME%%FILE_EXT%")
    out = template.expand_name(
        str(name), collection_id=cid, collection_name="n", result_set_id="r", now=NOW
    )
    assert len(out.split("/")) == 2
    assert all(s not in ("", ".", "..") for s in out.split("/"))


def test_unknown_tokens_are_rejected_with_their_position() -> None:
    with pytest.raises(InvalidTemplate) as info:
        FileNameTemplate("%FILE_NAME%-%PARTS%")
    assert info.value.position == 12
    with pytest.raises(InvalidTemplate):  # a prefix knows no file tokens
        from destinations import PathTemplate

        PathTemplate("exports/%FILE_NAME%")
