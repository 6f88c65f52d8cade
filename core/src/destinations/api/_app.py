"""The HTTP layer: routes, body parsing, the ``request_info`` envelope, error mapping."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._settings import DEFAULT_DATABASE_URL, env_name, settings
from ..persistence import DestinationRepository, load_secret_box, make_engine, upgrade
from ._openapi import build_openapi
from ._service import ApiError, DestinationService, Settings

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "LOCAL_ROOT_ENV",
    "create_app",
]

log = logging.getLogger("destinations.api")

DATABASE_URL_ENV = env_name("database_url")
LOCAL_ROOT_ENV = env_name("local_root")
WRITE_TYPES = ("application/json", "application/x-www-form-urlencoded")


def _envelope(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(
        {"request_info": {"success": False, "message": message, **extra}},
        status_code=status,
        headers=headers,
    )


def _ok(status: int = 200, **body: Any) -> JSONResponse:
    return JSONResponse({"request_info": {"success": True}, **body}, status_code=status)


async def _read_params(request: Request, limit: int) -> dict[str, Any]:
    """The write body as a dict, from JSON or a form; 413 as soon as it passes ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"Request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:  # Content-Length may be absent (chunked) or wrong
            raise ApiError(413, f"Request body is larger than {limit} bytes")
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not body.strip():
        return {}
    if media_type == "application/json":
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"Request body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ApiError(400, "Request body must be a JSON object of destination fields")
        return data
    if media_type in ("application/x-www-form-urlencoded", ""):
        try:
            pairs = parse_qsl(
                body.decode(), keep_blank_values=True, strict_parsing=True, errors="strict"
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(
                400,
                "Request body is not valid form data (UTF-8, "
                "application/x-www-form-urlencoded); write a % in a value "
                "as %25, e.g. with curl --data-urlencode",
            ) from exc
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


def _errors(
    endpoint: Callable[[Request, DestinationService], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Run ``endpoint`` with the app's service; an :class:`ApiError` becomes the envelope."""

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request, request.app.state.service)
        except ApiError as exc:
            return _envelope(exc.status, exc.message, exc.headers, **exc.extra)

    return wrapped


def _authenticated(
    service: DestinationService, api_key: str | None, work: Callable[[int], Response]
) -> Response:
    """Authenticate, then ``work(account)``: both in one worker-thread call."""
    return work(service.authenticate(api_key))


async def _run(
    request: Request, service: DestinationService, work: Callable[[int], Response]
) -> Response:
    """``work(account)`` for the request's API key, in a single threadpool hop."""
    return await run_in_threadpool(
        _authenticated, service, request.query_params.get("api_key"), work
    )


async def _authenticate(request: Request, service: DestinationService) -> int:
    """The account of a write, found before its body is read: a bad key answers 401
    without the server reading (or judging) the body."""
    return await run_in_threadpool(service.authenticate, request.query_params.get("api_key"))


@_errors
async def create(request: Request, service: DestinationService) -> Response:
    account = await _authenticate(request, service)
    params = await _read_params(request, request.app.state.max_body_bytes)
    destination = await run_in_threadpool(service.create, account, params)
    return _ok(destination=destination)


@_errors
async def list_(request: Request, service: DestinationService) -> Response:
    query = dict(request.query_params)
    return await _run(request, service, lambda account: _ok(**service.list(account, query)))


@_errors
async def get(request: Request, service: DestinationService) -> Response:
    destination_id = request.path_params["id"]
    return await _run(
        request,
        service,
        lambda account: _ok(destination=service.get(account, destination_id)),
    )


@_errors
async def update(request: Request, service: DestinationService) -> Response:
    account = await _authenticate(request, service)
    params = await _read_params(request, request.app.state.max_body_bytes)
    destination = await run_in_threadpool(
        service.update, account, request.path_params["id"], params
    )
    return _ok(destination=destination)


def _deleted(service: DestinationService, account: int, destination_id: str) -> Response:
    service.delete(account, destination_id)
    return JSONResponse({"request_info": {"success": True, "message": "1 Destination deleted"}})


@_errors
async def delete(request: Request, service: DestinationService) -> Response:
    destination_id = request.path_params["id"]
    return await _run(request, service, lambda account: _deleted(service, account, destination_id))


async def openapi(request: Request) -> Response:
    state = request.app.state
    if state.openapi is None:
        service: DestinationService = state.service
        state.openapi = await run_in_threadpool(build_openapi, service.offered_types())
    return JSONResponse(state.openapi)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):  # an unknown verb is "not found" too, as documented
        return _envelope(404, f"Not found: {request.method} {request.url.path}")
    return _envelope(exc.status_code, str(exc.detail))


async def _server_error(request: Request, exc: Exception) -> Response:
    return _envelope(500, "Internal server error")


def create_app(
    *,
    database_url: str | None = None,
    local_root: str | os.PathLike[str] | None = None,
    encryption_keys: str | Sequence[str] | None = None,
    max_destinations: int | None = None,
    verify_timeout: float = 30.0,
    max_body_bytes: int = 64 * 1024,
    verifications_per_minute: int | None = None,
) -> Starlette:
    """The Destinations HTTP API as an ASGI app, its database migrated to the newest schema.

    ``database_url``: SQLAlchemy URL (else ``DESTINATIONS_DATABASE_URL``, else the SQLite
    file ``./destinations.db``). ``local_root``: the only directory tree ``local``
    destinations may write into (else ``DESTINATIONS_LOCAL_ROOT``; with neither, the
    ``local`` type is not offered). ``encryption_keys``: Fernet keys, newest first (else
    ``DESTINATIONS_ENCRYPTION_KEYS``, else a key file beside a SQLite database).
    ``max_destinations``: destinations one account may hold (else
    ``DESTINATIONS_MAX_DESTINATIONS``, else 50). ``verifications_per_minute``: verification
    attempts allowed per account (a token bucket in this process: each replica counts its
    own; 0 turns the limit off; else ``DESTINATIONS_VERIFICATIONS_PER_MINUTE``, else 30); more
    answer 429 with ``Retry-After``. The environment is read through
    :func:`destinations._settings.settings`.
    """
    env = settings()
    database_url = database_url or env.database_url
    if local_root is None:
        local_root = env.local_root
    if max_destinations is None:
        max_destinations = env.max_destinations
    if verifications_per_minute is None:
        verifications_per_minute = env.verifications_per_minute
    root: Path | None = None
    if local_root is not None:
        root = Path(os.path.realpath(local_root))
        if not root.is_dir():
            raise ValueError(f"local root {str(local_root)!r} is not an existing directory")
    box = load_secret_box(encryption_keys, database_url)
    engine = make_engine(database_url)
    upgrade(engine)
    service = DestinationService(
        DestinationRepository(engine, box),
        Settings(
            local_root=root,
            max_destinations=max_destinations,
            verify_timeout=verify_timeout,
            verifications_per_minute=verifications_per_minute,
        ),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = Starlette(
        routes=[
            Route("/destinations", create, methods=["POST"]),
            Route("/destinations", list_, methods=["GET"]),
            Route("/destinations/{id}", get, methods=["GET"]),
            Route("/destinations/{id}", update, methods=["PUT"]),
            Route("/destinations/{id}", delete, methods=["DELETE"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.engine = engine
    app.state.max_body_bytes = max_body_bytes
    app.state.openapi = None
    return app
