"""Reading a request: the write body (JSON or a form) within a size and a time limit, and
the characters no parameter may hold. Every refusal is an :class:`ApiError` 4xx."""

from __future__ import annotations

import json
import math
from typing import Any, Final, NoReturn
from urllib.parse import parse_qsl

import anyio
from starlette.requests import Request

from ._errors import ApiError
from ._form_errors import form_body_problem

__all__ = [
    "MAX_NUMBER_CHARS",
    "WRITE_TYPES",
    "check_request",
    "idempotency_key",
    "read_params",
]

WRITE_TYPES: Final = ("application/json", "application/x-www-form-urlencoded")
#: Longest number literal a JSON body may hold (no destination field needs more).
MAX_NUMBER_CHARS: Final = 64
MAX_IDEMPOTENCY_KEY_CHARS: Final = 255


def _too_long_number(_: str) -> NoReturn:
    raise ApiError(
        400, f"Request body holds a number longer than {MAX_NUMBER_CHARS} characters"
    )


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        _too_long_number(text)
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        _too_long_number(text)
    value = float(text)
    if not math.isfinite(value):
        raise ApiError(400, "Request body holds a number too large to represent")
    return value


def _constant(name: str) -> NoReturn:
    raise ApiError(400, f"Request body is not valid JSON: {name} is not a JSON value")


def _check_unicode(data: dict[str, Any]) -> None:
    """Every string and key must be encodable as UTF-8 (JSON's ``\\ud800`` escapes can
    spell lone surrogates, which no database column or file name can hold)."""
    for field, value in data.items():
        stack: list[Any] = [field, value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    where = field if _encodable(field) else "a field name"
                    raise ApiError.invalid(
                        {where: "holds an unpaired UTF-16 surrogate (not valid Unicode text)"}
                    ) from None
            elif isinstance(item, dict):
                for key, inner in item.items():
                    stack += (key, inner)
            elif isinstance(item, list):
                stack += item


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def read_params(request: Request, limit: int, timeout: float) -> dict[str, Any]:
    """The write body as a dict, from JSON or a form; 413 as soon as it passes ``limit``,
    408 when it has not arrived within ``timeout`` seconds."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"Request body is larger than {limit} bytes")
    body = bytearray()
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:  # Content-Length may be absent (chunked) or wrong
                    raise ApiError(413, f"Request body is larger than {limit} bytes")
    except TimeoutError:
        raise ApiError(
            408,
            f"Request body did not arrive within {timeout:g} s",
            headers={"Connection": "close"},
        ) from None
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not body.strip():
        return {}
    if media_type == "application/json":
        try:
            data = json.loads(
                body, parse_int=_int, parse_float=_float, parse_constant=_constant
            )
        except RecursionError:
            raise ApiError(400, "Request body is not valid JSON: nested too deeply") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"Request body is not valid JSON: {exc}") from exc
        except ValueError as exc:  # e.g. an integer beyond int's digit limit
            raise ApiError(400, "Request body is not valid JSON: a number is too long") from exc
        if not isinstance(data, dict):
            raise ApiError(400, "Request body must be a JSON object of destination fields")
        _check_unicode(data)
        return data
    if media_type in ("application/x-www-form-urlencoded", ""):
        if bytes(body.lstrip()[:1]) in (b"{", b"["):  # JSON without a JSON Content-Type
            raise ApiError(400, form_body_problem(bytes(body)))
        try:
            pairs = parse_qsl(
                body.decode(), keep_blank_values=True, strict_parsing=True, errors="strict"
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(400, form_body_problem(bytes(body))) from exc
        form: dict[str, Any] = {}
        repeated: dict[str, str] = {}
        for key, value in pairs:
            if key in form:
                repeated[key] = "given more than once"
            form[key] = value
        if repeated:
            raise ApiError.invalid(repeated)
        return form
    raise ApiError(400, f"Content-Type must be one of {', '.join(WRITE_TYPES)}")


def check_request(request: Request) -> None:
    """Refuse NUL characters and unpaired surrogates in query parameters (names and values)
    and path parameters: no database text column can hold them (PostgreSQL refuses NUL)."""
    problems: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        for text in (name, value):
            if "\x00" in text:
                problems[_label(name)] = "must not contain NUL characters"
            elif not _encodable(text):
                problems[_label(name)] = "is not valid Unicode text"
    for name, value in request.path_params.items():
        if isinstance(value, str) and ("\x00" in value or not _encodable(value)):
            problems[name] = "must not contain NUL characters or invalid Unicode"
    if problems:
        raise ApiError.invalid(problems)


def _label(name: str) -> str:
    if "\x00" in name or not _encodable(name):
        return "a query parameter name"
    return name


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header: 1 to 255 visible ASCII characters, or None."""
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY_CHARS or not all(
        "!" <= c <= "~" for c in value
    ):
        raise ApiError(
            400,
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII "
            "characters (e.g. a UUID)",
        )
    return value


class RefuseUnstorableText:
    """ASGI middleware: a request whose path or query string holds a NUL character or text
    that is not valid Unicode answers 400 in the envelope before any route runs (no route,
    present or future, can then hand PostgreSQL a NUL)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            problem = _unstorable(scope)
            if problem is not None:
                from starlette.responses import JSONResponse

                error = ApiError.invalid(
                    {problem: "must not contain NUL characters or text that is not valid Unicode"}
                )
                info = {"success": False, "message": error.message, **error.extra}
                response = JSONResponse({"request_info": info}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _unstorable(scope: Any) -> str | None:
    """Which part of the request cannot be stored: ``path``, a parameter name, or None."""
    path = scope.get("path", "")
    if "\x00" in path or not _encodable(path):
        return "path"
    query = scope.get("query_string", b"")
    if not query:
        return None
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return "query string"
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            return _label(name)
    return None
