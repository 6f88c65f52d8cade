"""Path and file-name templates (destinations._template) as their docstrings and DESIGN.md
document them, pinned where a mutation run found no test telling right from wrong: the
one-shot ``expand_prefix``, the current UTC date when no time is given (whatever the
process's local time zone), aware times converted to UTC, what a value may not carry, the
segments a file name may not produce, and what a refused template says."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from destinations import InvalidTemplate
from destinations._template import (
    TOKENS,
    FileNameTemplate,
    PathTemplate,
    expand_prefix,
    sanitize_segment,
)

IDS: dict[str, Any] = {"collection_id": "c/1", "collection_name": "Näme", "result_set_id": "r.9"}


@pytest.fixture
def far_east() -> Iterator[None]:
    """The process's local time zone is UTC+14 (so local and UTC hours differ)."""
    import os

    before = os.environ.get("TZ")
    os.environ["TZ"] = "Etc/GMT-14"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


# -- expand_prefix --------------------------------------------------------------------------------

def test_expand_prefix_expands_every_token_and_keeps_its_compiled_template() -> None:
    # a text this process has never compiled (the compiled templates are cached)
    fresh = uuid.uuid4().hex
    text = f"{fresh}/%COLLECTION_ID%/%COLLECTION_NAME%/%RESULT_SET_ID%/%DATE%/%HOUR%"
    now = datetime(2026, 11, 27, 13, 5)
    for _ in range(2):  # the second call uses the cached compiled template
        assert expand_prefix(text, now=now, **IDS) == f"{fresh}/c_1/Näme/r.9/2026_11_27/13"


# -- dates ---------------------------------------------------------------------------------------

def utc_parts() -> str:
    return datetime.now(UTC).strftime("%Y_%m_%d-%Y-%m-%d-%H")


def test_without_a_time_the_current_utc_hour_is_used(far_east: None) -> None:
    template = PathTemplate("%DATE%-%YEAR%-%MONTH%-%DAY%-%HOUR%")
    for _ in range(3):  # an hour may turn between the two readings: try again then
        before = utc_parts()
        expanded = template.expand(collection_id=1, collection_name=2, result_set_id=3)
        again = template.expand(collection_id=1, collection_name=2, result_set_id=3)
        if before == utc_parts():
            break
    assert expanded == again == before


def clock_at(instant: datetime) -> Callable[[], float]:
    at = instant.timestamp()
    return lambda: at


def test_without_a_time_the_clocks_utc_hour_is_used_as_soon_as_it_changes(
    far_east: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = PathTemplate("%DATE%/%YEAR%/%MONTH%/%DAY%/%HOUR%")
    expanded = []
    for instant in (datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC),
                    datetime(2031, 1, 2, 3, 59, 59, tzinfo=UTC),
                    datetime(2031, 12, 31, 23, 0, 0, tzinfo=UTC)):
        monkeypatch.setattr(time, "time", clock_at(instant))
        expanded.append(template.expand(collection_id=1, collection_name=2, result_set_id=3))
    assert expanded == ["2031_01_02/2031/01/02/03", "2031_01_02/2031/01/02/03",
                        "2031_12_31/2031/12/31/23"]


def test_an_aware_time_is_converted_to_utc_whatever_the_local_zone(far_east: None) -> None:
    template = PathTemplate("%DATE%/%HOUR%")
    new_york = timezone(timedelta(hours=-5))
    now = datetime(2026, 3, 4, 23, 30, tzinfo=new_york)
    assert template.expand(now=now, **IDS) == "2026_03_05/04"
    naive = datetime(2026, 3, 4, 23, 30)  # naive means UTC
    assert template.expand(now=naive, **IDS) == "2026_03_04/23"


# -- values ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "segment"),
    [
        ("a\\b", "a_b"),
        ("a/b\\c", "a_b_c"),
        ("e\u0301t\u00e9", "\u00e9t\u00e9"),  # NFC
        ("a\u2028b\u2029c", "a_b_c"),
        ("a\ud800b", "a_b"),
        ("x\x85y", "x_y"),
        ("", "_"),
        (".", "_"),
        ("..", "_"),
        ("...", "..."),
        (12, "12"),
    ],
)
def test_a_value_becomes_exactly_one_segment(value: object, segment: str) -> None:
    assert sanitize_segment(value) == segment


# -- file names -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("template", "file_name", "name"),
    [
        ("%FILE_EXT%/%FILE_NAME%", "readme", "_/readme"),  # an empty segment
        ("%FILE_NAME%/%FILE_EXT%", "..csv", "_/.csv"),  # a "." segment
        ("%FILE_NAME%/%FILE_EXT%", "...csv", "_/.csv"),  # a ".." segment
        ("%FILE_NAME%/x/%FILE_EXT%", "a.b.csv", "a.b/x/.csv"),
        ("%FILE_NAME%%PART%%FILE_EXT%", "a.csv", "a.csv"),  # no part: %PART% is empty
    ],
)
def test_a_file_name_never_has_an_empty_or_dot_segment(
    template: str, file_name: str, name: str
) -> None:
    assert FileNameTemplate(template).expand_name(file_name, **IDS) == name


# -- refusals -------------------------------------------------------------------------------------

def test_a_template_must_be_a_string() -> None:
    with pytest.raises(TypeError) as info:
        PathTemplate(5)  # type: ignore[arg-type]
    assert str(info.value) == "template must be a str, not int"


def refused(text: str, cls: type[PathTemplate] = PathTemplate) -> InvalidTemplate:
    with pytest.raises(InvalidTemplate) as info:
        cls(text)
    assert info.value.template == text
    return info.value


def test_an_unknown_token_is_refused_with_the_known_ones() -> None:
    error = refused("a/%NOPE%")
    known = ", ".join(f"%{t}%" for t in TOKENS)
    assert error.reason == (
        f"unknown token %NOPE%; known tokens are {known} (write %% for a literal %)"
    )
    assert error.position == 2
    assert "%COLLECTION_ID%, %COLLECTION_NAME%, " in error.reason


@pytest.mark.parametrize(("text", "position"), [("a\u2029b", 1), ("ab\ud800", 2),
                                                  ("\x7f", 0), ("a\u2028", 1)])
def test_control_characters_and_separators_are_refused(text: str, position: int) -> None:
    error = refused(text)
    assert error.position == position
    assert error.reason == (
        f"control character U+{ord(text[position]):04X} is not allowed in a path template"
    )


@pytest.mark.parametrize(("text", "position"), [("a/./b", 2), ("../x", 0), ("x/..", 2)])
def test_dot_segments_are_refused_where_they_are(text: str, position: int) -> None:
    error = refused(text)
    assert error.position == position


def test_the_normalised_text_writes_tokens_in_upper_case_and_percent_doubled() -> None:
    assert PathTemplate("a//%date%/100%%/").normalized == "a/%DATE%/100%%"
    assert FileNameTemplate("%file_name%-%Part%%FILE_EXT%").normalized == (
        "%FILE_NAME%-%PART%%FILE_EXT%")
