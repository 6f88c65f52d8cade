"""Shared hypothesis strategies: path templates and values; record files for shaping.

Every template property test draws from here, so a new shape of input (a new token, a new
kind of awkward character) is added once and exercised everywhere.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

from hypothesis import assume, strategies as st

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


# -- delivery shaping: record files (JSON Lines, CSV) ----------------------------------------

#: Pieces that matter to record splitting (line ends, quotes, separators), joined at random:
#: any byte string, well-formed or not, must still split without losing or cutting a byte.
record_pieces = st.sampled_from(
    [b"\n", b"\r\n", b"\r", b'"', b'""', b",", b"a", b"bc", b"{}", b" ", b"\xc3\xa9", b"\x00"]
)
record_bytes = st.one_of(
    st.lists(record_pieces, max_size=60).map(b"".join),
    st.binary(max_size=200),
)

_json_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _json_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_json_text, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def jsonl_documents(draw: st.DrawFn) -> bytes:
    """JSON Lines: one JSON value a line (its strings may hold escaped line breaks), LF or
    CRLF line ends, blank and whitespace-only lines now and then, and the last line with or
    without its line end."""
    lines = draw(
        st.lists(
            st.one_of(
                json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
                st.sampled_from(["", " ", "\t"]),
            ),
            max_size=25,
        )
    )
    ends = [draw(st.sampled_from(["\n", "\r\n"])) for _ in lines]
    text = "".join(line + end for line, end in zip(lines, ends, strict=True))
    if lines and draw(st.booleans()):
        text = text.removesuffix(ends[-1])
    return text.encode("utf-8")


#: CSV field values: empty, plain, and ones that must be quoted (separators, quotes, LF,
#: CRLF, lone CR), in any script.
csv_fields = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=8),
    st.lists(
        st.sampled_from(["a", "b c", ",", '"', '""', "\n", "\r\n", "\r", "é", "京", ""]),
        max_size=6,
    ).map("".join),
)


@st.composite
def csv_documents(draw: st.DrawFn) -> tuple[bytes, int]:
    """A CSV file as :mod:`csv` writes it, and its record count (header excluded).

    A header row, then rows (blank rows too) whose fields may hold separators, quotes and
    line breaks (a lone CR always quoted, as RFC 4180 wants); LF or CRLF line ends; minimal
    or full quoting; the last line end sometimes missing. The count is what :mod:`csv`'s
    reader finds (the independent oracle)."""
    width = draw(st.integers(1, 4))
    header = draw(st.lists(csv_fields, min_size=width, max_size=width))
    rows = draw(
        st.lists(
            st.one_of(st.lists(csv_fields, min_size=width, max_size=width), st.just([])),
            max_size=12,
        )
    )
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    if terminator == "\n" and any("\r" in f for row in [header, *rows] for f in row):
        # Minimal quoting leaves a lone CR unquoted unless it is in the line terminator;
        # such a CR is a line end to csv's reader but not to RFC 4180 (nor to the splitter).
        quoting = csv.QUOTE_ALL
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator=terminator, quoting=quoting)
    writer.writerow(header)
    writer.writerows(rows)
    text = out.getvalue()
    if draw(st.booleans()):
        text = text.removesuffix(terminator)
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    return text.encode("utf-8"), max(len(parsed) - 1, 0)
