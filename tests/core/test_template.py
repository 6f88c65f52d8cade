"""Pinned examples of the template rules (DESIGN.md "Path templates")."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from destinations import InvalidDestination, InvalidTemplate, PathTemplate, expand_prefix

NOW = datetime(2026, 11, 27, 9, 30)


def expand(text: str, **kw: object) -> str:
    values = {"collection_id": "C1", "collection_name": "Daily", "result_set_id": "42"}
    values.update(kw)  # type: ignore[arg-type]
    now = values.pop("now", NOW)
    return PathTemplate(text).expand(now=now, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my/prefix", "my/prefix"),
        ("", ""),
        ("%COLLECTION_ID%/%COLLECTION_NAME%/%RESULT_SET_ID%/%DATE%", "C1/Daily/42/2026_11_27"),
        ("%collection_id%-%Date%", "C1-2026_11_27"),  # tokens are case-insensitive
        ("year=%YEAR%/month=%MONTH%/day=%DAY%/hour=%HOUR%", "year=2026/month=11/day=27/hour=09"),
        ("100%%/%DATE%", "100%/2026_11_27"),  # %% is a literal %
        ("50%off/%DATE%", "50%off/2026_11_27"),  # a % that starts no token is literal
        ("%DATE%%", "2026_11_27%"),
        ("//a///b//", "a/b"),  # normalised: no leading, trailing or doubled /
        ("/%DATE%/", "2026_11_27"),
        ("{braces}/%DATE%", "{braces}/2026_11_27"),
    ],
)
def test_expansion(text: str, expected: str) -> None:
    assert expand(text) == expected


def test_values_are_inserted_literally_once() -> None:
    assert expand("x/%COLLECTION_NAME%", collection_name="%DATE%") == "x/%DATE%"
    assert expand("x/%COLLECTION_NAME%", collection_name="%RESULT_SET_ID%") == "x/%RESULT_SET_ID%"


@pytest.mark.parametrize(
    ("value", "segment"),
    [
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("..", "_"),
        (".", "_"),
        ("", "_"),
        ("...", "..."),
        ("tab\there", "tab_here"),
        ("new\nline", "new_line"),
        ("Straße café 京都", "Straße café 京都"),  # letters of any script and spaces pass
        ("e\u0301", "\u00e9"),  # NFC-normalised
        ("a-b_c.d", "a-b_c.d"),
        (12345, "12345"),
    ],
)
def test_value_sanitising(value: object, segment: str) -> None:
    assert expand("p/%COLLECTION_NAME%/q", collection_name=value) == f"p/{segment}/q"


def test_date_is_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    # 2026-11-28 03:00 in Tokyo is still 2026-11-27 in UTC.
    assert (
        expand("%DATE%/%HOUR%", now=datetime(2026, 11, 28, 3, 0, tzinfo=tokyo)) == "2026_11_27/18"
    )
    assert expand("%DATE%", now=datetime(2026, 11, 27, 23, 59, tzinfo=UTC)) == "2026_11_27"


def test_default_now_is_current_utc_date() -> None:
    before = datetime.now(UTC).strftime("%Y_%m_%d")
    out = expand_prefix("%DATE%", collection_id=1, collection_name=2, result_set_id=3)
    after = datetime.now(UTC).strftime("%Y_%m_%d")
    assert out in (before, after)


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("exports/%COLECTION_ID%", 8, "unknown token %COLECTION_ID%"),
        ("%date%/%nope%", 7, "unknown token %nope%"),
        ("a/../b", 2, "'..' path segment"),
        ("./a", 0, "'.' path segment"),
        ("a/.", 2, "'.' path segment"),
        ("bad\x00nul", 3, "U+0000"),
        ("line\nbreak", 4, "U+000A"),
    ],
)
def test_rejected_at_parse_time(text: str, position: int, fragment: str) -> None:
    with pytest.raises(InvalidTemplate) as info:
        PathTemplate(text)
    assert info.value.position == position
    assert fragment in str(info.value)
    assert isinstance(info.value, InvalidDestination)
    assert isinstance(info.value, ValueError)


def test_unknown_token_message_lists_known_tokens() -> None:
    with pytest.raises(InvalidTemplate) as info:
        PathTemplate("%FOO%")
    for token in ("%COLLECTION_ID%", "%COLLECTION_NAME%", "%RESULT_SET_ID%", "%DATE%", "%HOUR%"):
        assert token in str(info.value)


def test_dot_segments_made_only_by_values_are_fine() -> None:
    # A literal "." next to a token is not a "." segment.
    assert expand("a/.%COLLECTION_ID%") == "a/.C1"
    assert expand("a/.hidden/%DATE%") == "a/.hidden/2026_11_27"


def test_probe_prefix() -> None:
    assert PathTemplate("my/prefix").probe_prefix == "my/prefix/"
    assert PathTemplate("/exports//%DATE%/x").probe_prefix == "exports/"
    assert PathTemplate("data-%DATE%").probe_prefix == "data-"
    assert PathTemplate("%DATE%").probe_prefix == ""
    assert PathTemplate("").probe_prefix == ""


def test_compile_once_equality_and_repr() -> None:
    a, b = PathTemplate("x//%date%"), PathTemplate("x/%DATE%")
    assert a == b and hash(a) == hash(b)
    assert repr(a) == "PathTemplate('x//%date%')"
    assert a.tokens == frozenset({"DATE"})
    assert a.normalized == "x/%DATE%"


def test_key_over_1024_bytes_is_an_error_not_truncated() -> None:
    from destinations import ObjectKeyTooLong, object_key

    assert len(object_key("p", "x" * 1022)) == 1024
    with pytest.raises(ObjectKeyTooLong) as info:
        object_key("p", "x" * 1023)
    assert "1025 UTF-8 bytes" in str(info.value)
    with pytest.raises(ObjectKeyTooLong):
        expand("%COLLECTION_NAME%", collection_name="ü" * 513)


def test_non_string_template_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        PathTemplate(None)  # type: ignore[arg-type]


def test_default_now_matches_an_explicit_now_for_every_date_token() -> None:
    t = PathTemplate("%YEAR%/%MONTH%/%DAY%/%HOUR%/%DATE%")
    values = {"collection_id": "c", "collection_name": "n", "result_set_id": "r"}
    before = t.expand(**values, now=datetime.now(UTC))
    default = t.expand(**values)
    after = t.expand(**values, now=datetime.now(UTC))
    assert default in (before, after)
