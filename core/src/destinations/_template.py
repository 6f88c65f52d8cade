"""Path templates: ``exports/%COLLECTION_NAME%/%DATE%`` compiled once, expanded many times.

Rules (DESIGN.md "Path templates"):

* Tokens are case-insensitive: ``%COLLECTION_ID%``, ``%COLLECTION_NAME%``, ``%RESULT_SET_ID%``,
  ``%DATE%`` (``YYYY_MM_DD``, UTC), ``%YEAR%``, ``%MONTH%``, ``%DAY%``, ``%HOUR%``.
* ``%%`` is a literal ``%``; a ``%`` that starts no ``%NAME%`` is literal; ``%NAME%`` with an
  unknown NAME is an error carrying its position.
* Expansion is one pass: values are inserted literally, never expanded again.
* A value never changes the number of segments: ``/``, ``\\`` and control characters become
  ``_``; a value that would be empty, ``.`` or ``..`` becomes ``_``. Values are NFC-normalised.
* The literal text is normalised (no leading, trailing or doubled ``/``); a ``.`` or ``..``
  segment, or a control character, is rejected.
* An object key over 1024 UTF-8 bytes is an error, never truncated.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from ._errors import InvalidTemplate, ObjectKeyTooLong

__all__ = [
    "DEFAULT_FILE_NAME_TEMPLATE",
    "FILE_NAME_TOKENS",
    "MAX_KEY_BYTES",
    "TOKENS",
    "FileNameTemplate",
    "PathTemplate",
    "expand_prefix",
    "join_key",
    "object_key",
    "sanitize_segment",
]

MAX_KEY_BYTES: Final = 1024

#: Every token a template may use, in the case used in documentation.
TOKENS: Final[tuple[str, ...]] = (
    "COLLECTION_ID",
    "COLLECTION_NAME",
    "RESULT_SET_ID",
    "DATE",
    "YEAR",
    "MONTH",
    "DAY",
    "HOUR",
)
#: What a file-name template may use besides :data:`TOKENS`.
FILE_NAME_TOKENS: Final[tuple[str, ...]] = (*TOKENS, "FILE_NAME", "FILE_EXT", "PART")
DEFAULT_FILE_NAME_TEMPLATE: Final = "%FILE_NAME%%FILE_EXT%"
_VALUE_TOKENS: Final = frozenset(
    {"COLLECTION_ID", "COLLECTION_NAME", "RESULT_SET_ID", "FILE_NAME", "FILE_EXT", "PART"}
)
_NAME = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)%")


def _is_control(ch: str) -> bool:
    # Cc: C0/C1 controls and DEL; Zl/Zp: line/paragraph separators; Cs: lone surrogates,
    # which cannot be encoded as UTF-8 at all.
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs")


# str.translate table replacing every character a value may not carry with "_".
_VALUE_TABLE: Final[dict[int, str]] = {
    cp: "_" for cp in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0xD800, 0xE000))
}
_VALUE_TABLE[ord("/")] = "_"
_VALUE_TABLE[ord("\\")] = "_"
assert all(_is_control(chr(c)) for c in _VALUE_TABLE if chr(c) not in "/\\")


_segment_cache: dict[object, str] = {}


def _segment(value: object) -> str:
    """:func:`sanitize_segment`, memoised: collection ids and names repeat across result sets
    and files. Bounded; cleared when full."""
    if type(value) is str:
        cached = _segment_cache.get(value)
        if cached is not None:
            return cached
        if len(_segment_cache) >= 4096:
            _segment_cache.clear()
        cached = _segment_cache[value] = sanitize_segment(value)
        return cached
    return sanitize_segment(value)


def sanitize_segment(value: object) -> str:
    """Turn any value into exactly one path segment.

    NFC-normalises, replaces ``/``, ``\\`` and control characters with ``_``, and turns a
    result that is empty, ``.`` or ``..`` into ``_``. Everything else passes unchanged.
    """
    text = value if type(value) is str else str(value)
    if text.isascii():
        # Fast path: printable ASCII without separators passes unchanged.
        if text.isprintable() and "/" not in text and "\\" not in text:
            return text if text not in ("", ".", "..") else "_"
    elif not unicodedata.is_normalized("NFC", text):
        # Normalising is safe before the translation: lone surrogates survive it unchanged.
        text = unicodedata.normalize("NFC", text)
    text = text.translate(_VALUE_TABLE)
    if text in ("", ".", ".."):
        return "_"
    return text


def object_key(prefix: str, file_name: str) -> str:
    """``prefix + "/" + file_name`` (just the file name for an empty prefix).

    The file name is sanitised as one segment. Raises :class:`ObjectKeyTooLong` over 1024
    UTF-8 bytes.
    """
    name = sanitize_segment(file_name)
    key = f"{prefix}/{name}" if prefix else name
    _check_length(key)
    return key


def join_key(prefix: str, name: str) -> str:
    """``prefix + "/" + name`` for a ``name`` whose segments are already safe (a file-name
    template's expansion). Raises :class:`ObjectKeyTooLong` over 1024 UTF-8 bytes."""
    key = f"{prefix}/{name}" if prefix else name
    _check_length(key)
    return key


def _check_length(key: str) -> None:
    # A UTF-8 character is at most 4 bytes, so short keys skip the encode.
    if len(key) * 4 > MAX_KEY_BYTES and len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ObjectKeyTooLong(key)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        return now
    return now.astimezone(UTC)


class PathTemplate:
    """A compiled path template.

    >>> t = PathTemplate("exports/%COLLECTION_NAME%/%DATE%")
    >>> t.expand(collection_id="c1", collection_name="a/b", result_set_id="7",
    ...          now=datetime(2026, 11, 27))
    'exports/a_b/2026_11_27'

    Raises :class:`~destinations.InvalidTemplate` (with ``.position``) when the text uses an
    unknown token, a ``.``/``..`` segment or a control character.
    """

    #: The tokens this kind of template knows.
    known_tokens: tuple[str, ...] = TOKENS

    __slots__ = (
        "_format",
        "_literal_prefix",
        "_render",
        "_segments",
        "_text",
        "_tokens",
        "normalized",
    )

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"template must be a str, not {type(text).__name__}")
        self._text = text
        # Pieces in order: literal text, or "\0NAME" for a token (a template cannot contain
        # NUL: control characters are rejected).
        pieces: list[str] = []
        literal: list[str] = []
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if ch == "%":
                if text.startswith("%%", i):
                    literal.append("%")
                    i += 2
                    continue
                m = _NAME.match(text, i)
                if m:
                    name = m.group(1).upper()
                    if name not in self.known_tokens:
                        known = ", ".join(f"%{t}%" for t in self.known_tokens)
                        raise InvalidTemplate(
                            f"unknown token %{m.group(1)}%; known tokens are {known} "
                            f"(write %% for a literal %)",
                            template=text,
                            position=i,
                        )
                    pieces.append("".join(literal))
                    literal.clear()
                    pieces.append("\0" + name)
                    i = m.end()
                    continue
            if _is_control(ch):
                raise InvalidTemplate(
                    f"control character U+{ord(ch):04X} is not allowed in a path template",
                    template=text,
                    position=i,
                )
            literal.append(ch)
            i += 1
        pieces.append("".join(literal))

        # Split into segments on "/" and drop empty ones: that removes leading, trailing
        # and doubled slashes in one go.
        segments: list[list[str]] = [[]]
        for piece in pieces:
            if piece.startswith("\0"):
                segments[-1].append(piece)
                continue
            for j, chunk in enumerate(piece.split("/")):
                if j:
                    segments.append([])
                if chunk:
                    segments[-1].append(chunk)
        segments = [s for s in segments if s]
        for seg in segments:
            if len(seg) == 1 and seg[0] in (".", ".."):
                raise InvalidTemplate(
                    f"a {seg[0]!r} path segment is not allowed",
                    template=text,
                    position=_find_dot_segment(text, seg[0]),
                )
        self._segments = tuple(tuple(seg) for seg in segments)
        self._tokens = frozenset(p[1:] for seg in segments for p in seg if p.startswith("\0"))

        # Compiled to a %-format string and a function made for this template's tokens
        # (see _compile_renderer).
        fmt: list[str] = []
        order: list[str] = []
        for k, seg in enumerate(segments):
            if k:
                fmt.append("/")
            for p in seg:
                if p.startswith("\0"):
                    fmt.append("%s")
                    order.append(p[1:])
                else:
                    fmt.append(unicodedata.normalize("NFC", p).replace("%", "%%"))
        self._format = "".join(fmt)
        self._render = _compile_renderer(self._format, tuple(order))
        #: The normalised template (tokens in upper case, ``%`` written ``%%``).
        self.normalized = "/".join(
            "".join(f"%{p[1:]}%" if p.startswith("\0") else p.replace("%", "%%") for p in seg)
            for seg in segments
        )
        self._literal_prefix = self._compute_literal_prefix()

    def _compute_literal_prefix(self) -> str:
        out: list[str] = []
        for k, seg in enumerate(self._segments):
            if k:
                out.append("/")
            for p in seg:
                if p.startswith("\0"):
                    return "".join(out)
                out.append(unicodedata.normalize("NFC", p))
        return "".join(out)

    @property
    def text(self) -> str:
        """The template exactly as given."""
        return self._text

    @property
    def tokens(self) -> frozenset[str]:
        """The token names the template uses (upper case)."""
        return self._tokens

    @property
    def literal_prefix(self) -> str:
        """The normalised literal text before the first token (all of it if none).

        Every expansion starts with this text.
        """
        return self._literal_prefix

    @property
    def probe_prefix(self) -> str:
        """Where a verification probe goes: text before the first token, or the whole
        prefix followed by ``/`` when the template has no token. Stays inside any prefix an
        access policy is scoped to."""
        if self._tokens or not self._literal_prefix:
            return self._literal_prefix
        return self._literal_prefix + "/"

    def __repr__(self) -> str:
        return f"PathTemplate({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PathTemplate):
            return NotImplemented
        return self._format == other._format

    def __hash__(self) -> int:
        return hash(self._format)

    def expand(
        self,
        *,
        collection_id: object,
        collection_name: object,
        result_set_id: object,
        now: datetime | None = None,
    ) -> str:
        """Expand the template for one result set.

        ``now`` is the upload time (naive means UTC; default: the current UTC time). Pass the
        same ``now`` for every file of a result set. Raises
        :class:`~destinations.ObjectKeyTooLong` past 1024 UTF-8 bytes.
        """
        return self._render(collection_id, collection_name, result_set_id, now)


class FileNameTemplate(PathTemplate):
    """An object name under the prefix: the prefix tokens plus ``%FILE_NAME%`` (the file's
    name without its last extension), ``%FILE_EXT%`` (its last extension with the dot, or
    empty) and ``%PART%`` (the part number, 1-based, zero-padded to 5 digits). The same rules
    as a path template: one pass, values sanitised as one segment, unknown tokens rejected
    with their position, keys at most 1024 UTF-8 bytes.

    >>> FileNameTemplate("%FILE_NAME%-%PART%%FILE_EXT%").expand_name(
    ...     "orders.jsonl", part=3, collection_id="c", collection_name="n", result_set_id="r")
    'orders-00003.jsonl'
    """

    known_tokens = FILE_NAME_TOKENS
    __slots__ = ()

    @property
    def uses_part(self) -> bool:
        return "PART" in self.tokens

    def expand_name(
        self,
        file_name: str,
        *,
        part: int | None = None,
        collection_id: object,
        collection_name: object,
        result_set_id: object,
        now: datetime | None = None,
    ) -> str:
        """The object name for ``file_name`` (part ``part``, if split), as one or more
        segments; never empty, ``.`` or ``..``."""
        stem, ext = _split_extension(file_name)
        name = self._render(
            collection_id,
            collection_name,
            result_set_id,
            now,
            stem,
            ext,
            "" if part is None else f"{part:05d}",
        )
        return "/".join(s if s not in ("", ".", "..") else "_" for s in name.split("/"))


def _split_extension(file_name: str) -> tuple[str, str]:
    """(name without its last extension, the extension with its dot or ""), of the name as
    one segment: ``"a.b.csv"`` -> ``("a.b", ".csv")``, ``".env"`` -> ``(".env", "")``."""
    name = sanitize_segment(file_name)
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], name[dot:]


_RENDER_ARGS: Final = {
    "COLLECTION_ID": "seg(collection_id)",
    "COLLECTION_NAME": "seg(collection_name)",
    "RESULT_SET_ID": "seg(result_set_id)",
    # already one segment each (see FileNameTemplate.expand_name)
    "FILE_NAME": "file_name",
    "FILE_EXT": "file_ext",
    "PART": "part",
    "DATE": "d[0]",
    "YEAR": "d[1]",
    "MONTH": "d[2]",
    "DAY": "d[3]",
    "HOUR": "d[4]",
}


def _compile_renderer(fmt: str, order: tuple[str, ...]) -> Callable[..., str]:
    """Generate ``render(collection_id, collection_name, result_set_id, now)`` for one
    template: it sanitises only the values the template uses, computes the date only if it is
    used, and formats in one ``%`` operation (what namedtuple and dataclasses do: expansion
    runs once per file, so it is worth specialising). The generated source contains only the
    fixed names above; the template's own text reaches it as the ``FMT`` object, never as code.
    """
    lines = [
        "def render(collection_id, collection_name, result_set_id, now,"
        " file_name='', file_ext='', part=''):"
    ]
    if any(name not in _VALUE_TOKENS for name in order):
        lines.append("    d = date_now() if now is None else date_at(now)")
    args = "".join(_RENDER_ARGS[name] + ", " for name in order)
    lines += [f"    key = FMT % ({args})", "    check(key)", "    return key"]
    namespace: dict[str, Any] = {
        "FMT": fmt,
        "seg": _segment,
        "date_now": _date_now,
        "date_at": _date_at,
        "check": _check_length,
    }
    exec("\n".join(lines), namespace)
    render: Callable[..., str] = namespace["render"]
    return render


DateParts = tuple[str, str, str, str, str]  # DATE, YEAR, MONTH, DAY, HOUR
_date_cache: dict[tuple[int, int, int, int], DateParts] = {}
# (hours since the epoch, its DateParts), replaced as one object so threads never see a mix.
_current: tuple[float, DateParts] = (-1.0, ("", "", "", "", ""))


def _date_now() -> DateParts:
    """Date parts of the current UTC hour, without building a datetime per call."""
    global _current
    hour = time.time() // 3600
    current = _current
    if hour != current[0]:
        current = _current = (hour, _date_parts(datetime.fromtimestamp(hour * 3600, UTC)))
    return current[1]


def _date_at(now: datetime) -> DateParts:
    return _date_parts(_utc(now))


def _date_parts(now: datetime) -> DateParts:
    key = (now.year, now.month, now.day, now.hour)
    cached = _date_cache.get(key)
    if cached is None:
        y, m, d, h = key
        cached = (f"{y:04d}_{m:02d}_{d:02d}", f"{y:04d}", f"{m:02d}", f"{d:02d}", f"{h:02d}")
        if len(_date_cache) > 64:
            _date_cache.clear()
        _date_cache[key] = cached
    return cached


def _find_dot_segment(text: str, dots: str) -> int:
    """Position of the first ``.``/``..`` segment in the raw text (between slashes)."""
    pattern = re.compile(r"(?:^|(?<=/))" + re.escape(dots) + r"(?=/|$)")
    m = pattern.search(text)
    return m.start() if m else 0


def expand_prefix(
    text: str,
    *,
    collection_id: object,
    collection_name: object,
    result_set_id: object,
    now: datetime | None = None,
) -> str:
    """Compile ``text`` and expand it once (compiled templates are cached)."""
    return _compiled(text).expand(
        collection_id=collection_id,
        collection_name=collection_name,
        result_set_id=result_set_id,
        now=now,
    )


_cache: dict[str, PathTemplate] = {}


def _compiled(text: str) -> PathTemplate:
    template = _cache.get(text)
    if template is None:
        template = PathTemplate(text)
        if len(_cache) >= 1024:
            _cache.clear()
        _cache[text] = template
    return template
