"""Why a form body does not parse, said so that the sender can fix it: which field, and
whether it is a stray ``%``, an unencoded ``&`` or JSON sent without a JSON content type."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["form_body_problem"]

_BAD_PERCENT: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_FIX: Final = "e.g. with curl --data-urlencode 'FIELD=VALUE'"


def form_body_problem(body: bytes) -> str:
    """The message for a body that is not valid ``application/x-www-form-urlencoded``."""
    stripped = body.lstrip()
    if stripped[:1] in (b"{", b"["):
        return (
            "Request body looks like JSON but was not sent as JSON: add the header "
            "Content-Type: application/json (curl -H 'Content-Type: application/json'), "
            "or send form fields"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "Request body is not valid form data: it is not UTF-8 text"
    previous: str | None = None
    for part in text.split("&"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            # Never echo the text: it may be the tail of a secret cut at an '&'.
            if previous is None:
                return "Request body is not valid form data: it does not start with NAME=VALUE"
            return (
                f"Request body is not valid form data: the text after the field {previous!r} "
                f"has no '='; an '&' inside the value of {previous!r} must be sent as %26 "
                f"({_FIX})"
            )
        if _BAD_PERCENT.search(value.encode()):
            return (
                f"Request body is not valid form data: the value of {_name(name)!r} has a '%' "
                f"that is not followed by two hex digits; write a % in a value as %25 ({_FIX})"
            )
        if _BAD_PERCENT.search(name.encode()):
            return (
                "Request body is not valid form data: a field name has a '%' that is not "
                "followed by two hex digits"
            )
        try:
            _unquote_strict(value)
        except UnicodeDecodeError:
            return (
                f"Request body is not valid form data: the value of {_name(name)!r} is not "
                "percent-encoded UTF-8; a literal '%' in a value (as in %DATE%) must be "
                f"written %25 ({_FIX})"
            )
        previous = _name(name)
    return (
        "Request body is not valid form data (UTF-8, application/x-www-form-urlencoded); "
        f"percent-encode '%', '&' and '+' inside values ({_FIX})"
    )


def _unquote_strict(value: str) -> str:
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(value.replace("+", " ")).decode("utf-8")


def _name(name: str) -> str:
    from urllib.parse import unquote

    return _excerpt(unquote(name.replace("+", " ")))


def _excerpt(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
