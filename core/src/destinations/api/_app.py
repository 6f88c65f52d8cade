"""The HTTP layer: routes, body parsing, the ``request_info`` envelope, error mapping."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import _metrics
from .._logging import account_id_var, log_context
from .._settings import DEFAULT_DATABASE_URL, env_name, settings
from ..persistence import DestinationRepository, load_secret_box, make_engine, upgrade
from ._body import RefuseUnstorableText, check_request, idempotency_key, read_params
from ._deliveries import build_deliveries, delivery_routes
from ._openapi import build_openapi
from ._service import ApiError, DestinationService, Settings

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "LOCAL_ROOT_ENV",
    "create_app",
]

log = logging.getLogger("destinations.api")
MISSING_KEY = "api_key is missing: add ?api_key=YOUR_KEY to the URL"

DATABASE_URL_ENV = env_name("database_url")
LOCAL_ROOT_ENV = env_name("local_root")


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
    """The write body as a dict (:func:`._body.read_params`, within the app's body timeout)."""
    return await read_params(request, limit, request.app.state.body_timeout)


def _errors(
    endpoint: Callable[[Request, DestinationService], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Run ``endpoint`` with the app's service; an :class:`ApiError` becomes the envelope."""

    async def wrapped(request: Request) -> Response:
        request_id = _request_id(request)
        with log_context(request_id=request_id):
            try:
                check_request(request)
                response = await endpoint(request, request.app.state.service)
            except ApiError as exc:
                response = _envelope(
                    exc.status, _form_hints(request, exc), exc.headers, **exc.extra
                )
        response.headers["X-Request-ID"] = request_id
        return response

    return wrapped


def _request_id(request: Request) -> str:
    """The caller's ``X-Request-ID`` when it is a sane token, else a new one."""
    given = request.headers.get("x-request-id", "")
    if 0 < len(given) <= 64 and all(c.isalnum() or c in "-_.:" for c in given):
        return given
    return os.urandom(8).hex()


#: What a form body does to an unencoded "+" (the secret validator says only "no spaces").
PLUS_HINT = (
    " (a '+' sent unencoded in a form body arrives as a space: encode it as %2B, e.g. with "
    "curl --data-urlencode)"
)


def _form_hints(request: Request, exc: ApiError) -> str:
    """The '+'-as-space hint, only for form bodies: a JSON body keeps its '+'."""
    errors = exc.extra.get("errors")
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not isinstance(errors, dict) or media_type not in ("application/x-www-form-urlencoded", ""):
        return exc.message
    if request.method not in ("POST", "PUT"):
        return exc.message
    hinted = False
    for field, message in list(errors.items()):
        if isinstance(message, str) and message.startswith("must not contain spaces"):
            errors[field] = message + PLUS_HINT
            hinted = True
    if not hinted:
        return exc.message
    detail = "; ".join(f"{field}: {message}" for field, message in errors.items())
    return f"Invalid parameters: {detail}"


def _api_key(request: Request) -> str:
    api_key = request.query_params.get("api_key")
    if not api_key:
        raise ApiError(401, MISSING_KEY)
    return api_key


def _authenticated(
    service: DestinationService, api_key: str | None, work: Callable[[int], Response]
) -> Response:
    """Authenticate, then ``work(account)``: both in one worker-thread call."""
    account = service.authenticate(api_key)
    account_id_var.set(account)
    return work(account)


async def _run(
    request: Request, service: DestinationService, work: Callable[[int], Response]
) -> Response:
    """``work(account)`` for the request's API key, in a single threadpool hop."""
    return await run_in_threadpool(_authenticated, service, _api_key(request), work)


async def _authenticate(request: Request, service: DestinationService) -> int:
    """The account of a write, found before its body is read: a bad key answers 401
    without the server reading (or judging) the body."""
    account = await run_in_threadpool(service.authenticate, _api_key(request))
    account_id_var.set(account)
    return account


@_errors
async def create(request: Request, service: DestinationService) -> Response:
    key = idempotency_key(request)
    account = await _authenticate(request, service)
    params = await _read_params(request, request.app.state.max_body_bytes)
    if key is None:
        pending = await run_in_threadpool(service.prepare_create, account, params)
        return _ok(destination=await service.execute(account, pending))
    claim = await run_in_threadpool(service.claim, account, key, params)
    if claim.outcome == "replay":
        assert claim.response is not None and claim.status is not None
        return Response(
            claim.response,
            status_code=claim.status,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        pending = await run_in_threadpool(service.prepare_create, account, params)
        response = _ok(destination=await service.execute(account, pending))
    except BaseException:
        await run_in_threadpool(service.release, account, key)
        raise
    body = bytes(response.body)
    await run_in_threadpool(service.finish, account, key, response.status_code, body)
    return response


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
    pending = await run_in_threadpool(
        service.prepare_update, account, request.path_params["id"], params
    )
    return _ok(destination=await service.execute(account, pending))


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


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus' text format: this process's counters and histograms."""
    return Response(await run_in_threadpool(_metrics.render), media_type=_metrics.CONTENT_TYPE)


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
    body_timeout: float = 30.0,
    verification_workers: int = 32,
    verifications_per_account: int = 4,
    metrics: bool = True,
    file_root: str | os.PathLike[str] | None = None,
    broker_url: str | None = None,
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
    answer 429 with ``Retry-After``. ``body_timeout``: seconds a write body may take to
    arrive (else 408). ``verification_workers``: threads that run verifications (apart from
    the request threads); ``verifications_per_account``: how many of them one account may
    hold at once (more answer 429 with ``Retry-After``). ``metrics``: serve Prometheus'
    ``GET /metrics`` (when prometheus-client is installed). The environment is read through
    :func:`destinations._settings.settings`.

    Refuses to start (:class:`~destinations.SecretsUnreadable`) when the database holds
    secrets the configured keys do not decrypt, and (``ValueError``) with a key file that
    is empty, corrupt or unreadable.
    """
    serve_metrics = metrics and _metrics.available()
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
            verification_workers=verification_workers,
            verifications_per_account=verifications_per_account,
        ),
    )

    # Delivery over HTTP (its own module): the file root (else DESTINATIONS_FILE_ROOT) and,
    # with a broker (else DESTINATIONS_BROKER_URL), Celery instead of the in-process runner.
    deliveries = build_deliveries(
        service, database_url=database_url, file_root=file_root, broker_url=broker_url
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        deliveries.runner.start()  # resumes deliveries a stopped or killed server left
        yield
        await run_in_threadpool(deliveries.runner.stop)
        service.gate.close()
        engine.dispose()

    app = Starlette(
        routes=[
            Route("/destinations", create, methods=["POST"]),
            Route("/destinations", list_, methods=["GET"]),
            Route("/destinations/{id}", get, methods=["GET"]),
            Route("/destinations/{id}", update, methods=["PUT"]),
            Route("/destinations/{id}", delete, methods=["DELETE"]),
            *delivery_routes(),
            Route("/openapi.json", openapi, methods=["GET"]),
            *([Route("/metrics", metrics_endpoint, methods=["GET"])] if serve_metrics else []),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        middleware=[Middleware(RefuseUnstorableText)],
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.deliveries = deliveries
    app.state.engine = engine
    app.state.max_body_bytes = max_body_bytes
    app.state.body_timeout = body_timeout
    app.state.openapi = None
    return app
