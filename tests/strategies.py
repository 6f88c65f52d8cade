"""Shared hypothesis strategies for path templates and values.

Every template property test draws from here, so a new shape of input (a new token, a new
kind of awkward character) is added once and exercised everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import assume
from hypothesis import strategies as st

from destinations import InvalidTemplate, PathTemplate
from destinations._template import TOKENS

#: Characters that are hard for paths: separators, dots, percent signs, controls, braces,
#: combining marks, scripts other than Latin, and lone surrogates.
AWKWARD = "/\\.%{} \t\n\x00\x7f\u0085\u2028é\u0301ü✓京ß"

token_names = st.sampled_from(TOKENS)


@st.composite
def token_texts(draw: st.DrawFn) -> str:
    """A token as a user might write it: any case."""
    name = draw(token_names)
    return "%" + "".join(c.lower() if draw(st.booleans()) else c for c in name) + "%"


#: Literal text that is always valid in a template: no control characters, no "%", and no
#: "." or ".." segment (the segments are built from safe characters plus "/").
safe_literal = st.text(
    alphabet=st.characters(categories=("L", "N", "Zs", "Pd"), include_characters="_-./~+=,;@()[]"),
    max_size=12,
).filter(lambda s: all(seg not in (".", "..") for seg in s.split("/")))


@st.composite
def templates(draw: st.DrawFn, *, min_tokens: int = 0) -> str:
    """A valid template text: literal pieces, tokens and %% escapes."""
    pieces = draw(
        st.lists(
            st.one_of(safe_literal, token_texts(), st.just("%%"), st.just("/")),
            max_size=10,
        )
    )
    for _ in range(min_tokens):
        pieces.append(draw(token_texts()))
    text = "".join(pieces)
    # Joining can create a "." or ".." segment from two literal pieces; keep only valid ones.
    try:
        PathTemplate(text)
    except InvalidTemplate:
        assume(False)
    return text


#: Values a collection or result set may have: anything, with awkward characters likely.
values = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=AWKWARD, max_size=10),
    st.sampled_from(["", ".", "..", "%DATE%", "%COLLECTION_ID%", "a/b", "..\\..", "%%"]),
    st.integers(),
)

#: Upload times: naive (UTC) and aware, around year and day boundaries.
nows = st.one_of(
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)),
    st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.timezones()
    ),
    st.just(datetime(2026, 12, 31, 23, 59, 59, 999999)),
    st.just(datetime(2027, 1, 1, tzinfo=UTC) - timedelta(microseconds=1)),
)
