"""Properties every template expansion keeps, whatever the template, values and time."""

from __future__ import annotations

import unicodedata
from datetime import datetime

from hypothesis import example, given, note, strategies as st

from destinations import InvalidTemplate, ObjectKeyTooLong, PathTemplate, object_key
from destinations._template import TOKENS, sanitize_segment
from tests.strategies import nows, templates, token_texts, values

FIXED_NOW = datetime(2026, 11, 27, 13, 5)


def _expand(template: PathTemplate, cid: object, cname: object, rsid: object, now: datetime):
    return template.expand(collection_id=cid, collection_name=cname, result_set_id=rsid, now=now)


def _segments_of_template(t: PathTemplate) -> int:
    return len(t.normalized.split("/")) if t.normalized else 0


@given(templates(), values, values, values, nows)
@example("%COLLECTION_NAME%", "c", "%DATE%", "r", FIXED_NOW)  # a value that looks like a token
@example("x/%COLLECTION_ID%", "%COLLECTION_NAME%", "n", "r", FIXED_NOW)
@example("%collection_name%/%Date%", "1", "a/b\\c", "r", FIXED_NOW)  # mixed-case tokens
def test_values_never_change_the_segment_count(text, cid, cname, rsid, now):
    t = PathTemplate(text)
    try:
        out = _expand(t, cid, cname, rsid, now)
    except ObjectKeyTooLong:
        return
    note(f"normalized={t.normalized!r} out={out!r}")
    assert (len(out.split("/")) if out else 0) == _segments_of_template(t)


@given(templates(min_tokens=1), values, values, values, nows)
@example("%COLLECTION_NAME%", "c", "..", "r", FIXED_NOW)  # ".." value must not climb up
@example("a/%COLLECTION_NAME%/b", "c", "", "r", FIXED_NOW)  # empty value must not make "//"
@example("%RESULT_SET_ID%", "c", "n", "\x00\n", FIXED_NOW)  # controls in a value
@example("%COLLECTION_NAME%", "c", "\udc80", "r", FIXED_NOW)  # lone surrogate
def test_expansions_are_clean_paths(text, cid, cname, rsid, now):
    t = PathTemplate(text)
    try:
        out = _expand(t, cid, cname, rsid, now)
    except ObjectKeyTooLong:
        return
    assert not out.startswith("/")
    assert not out.endswith("/")
    assert "//" not in out
    assert all(seg not in (".", "..") for seg in out.split("/"))
    assert not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in out)
    out.encode("utf-8")  # always encodable


@given(token_texts(), values)
@example("%DATE%", "%DATE%")
@example("%COLLECTION_NAME%", "%COLLECTION_ID%")
@example("%COLLECTION_NAME%", "%%")
def test_a_value_is_never_expanded_again(token, value):
    t = PathTemplate("p/" + token)
    name = token.strip("%").upper()
    if name not in ("COLLECTION_ID", "COLLECTION_NAME", "RESULT_SET_ID"):
        return
    kwargs = {"collection_id": "ID", "collection_name": "NAME", "result_set_id": "RS"}
    kwargs[name.lower()] = value
    out = t.expand(**kwargs, now=FIXED_NOW)
    assert out == "p/" + sanitize_segment(value)


@given(templates(), values, values, values, nows)
def test_literal_prefix_starts_every_expansion(text, cid, cname, rsid, now):
    t = PathTemplate(text)
    try:
        out = _expand(t, cid, cname, rsid, now)
    except ObjectKeyTooLong:
        return
    assert out.startswith(t.literal_prefix)
    assert t.probe_prefix.startswith(t.literal_prefix)


@given(templates(), values, values, values, nows)
def test_expansion_is_deterministic_for_a_fixed_now(text, cid, cname, rsid, now):
    t = PathTemplate(text)
    try:
        first = _expand(t, cid, cname, rsid, now)
    except ObjectKeyTooLong:
        return
    assert _expand(PathTemplate(text), cid, cname, rsid, now) == first
    assert _expand(t, cid, cname, rsid, now) == first


@given(templates())
def test_normalized_form_round_trips(text):
    t = PathTemplate(text)
    again = PathTemplate(t.normalized)
    assert again == t
    assert again.normalized == t.normalized


@given(
    templates(),
    templates(),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=12),
)
@example("a/", "", "FOO")
@example("%DATE%", "/x", "DATES")
def test_unknown_token_error_points_at_it(before, after, name):
    if name in TOKENS:
        return
    text = before + f"%{name}%" + after
    try:
        PathTemplate(text)
    except InvalidTemplate as exc:
        # The first unknown %NAME% in the text is reported (the prefix itself is valid, but
        # its trailing "%" may pair with our token's first "%").
        assert text[exc.position] == "%"
        assert exc.position <= len(before)
        assert "%DATE%" in str(exc)  # the known tokens are listed
    else:
        raise AssertionError(f"{text!r} was accepted")


@given(
    st.text(max_size=8), st.sampled_from(["\x00", "\x1f", "\x7f", "\u2028"]), st.text(max_size=8)
)
def test_control_character_error_points_at_it(before, ctrl, after):
    text = before.replace("%", "") + ctrl + after
    try:
        PathTemplate(text)
    except InvalidTemplate as exc:
        assert unicodedata.category(text[exc.position]) in ("Cc", "Zl", "Zp", "Cs") or (
            text[exc.position] == "."
        )
    else:
        raise AssertionError(f"{text!r} was accepted")


@given(templates(), values, st.text(max_size=300))
@example("", "c", "x" * 1024)  # exactly at the limit: accepted
@example("", "c", "x" * 1025)  # one byte over: rejected
@example("p", "c", "é" * 600)  # multi-byte characters count as bytes
def test_object_keys_never_exceed_1024_bytes(text, cid, name):
    try:
        prefix = PathTemplate(text).expand(
            collection_id=cid, collection_name="n", result_set_id="r", now=FIXED_NOW
        )
        key = object_key(prefix, name)
    except ObjectKeyTooLong as exc:
        assert len(exc.key.encode("utf-8", "surrogatepass")) > 1024
        return
    assert len(key.encode()) <= 1024
    assert key.rsplit("/", 1)[-1] == sanitize_segment(name)
