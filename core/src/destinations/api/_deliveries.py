"""Delivery over HTTP: ``POST /deliveries`` and the endpoints around it.

* ``POST /deliveries`` — a result set by file references (``{name, url}``: an https URL the
  runner fetches through the endpoint guard; ``{name, path}``: a file inside the operator's
  ``DESTINATIONS_FILE_ROOT``) and the account's destination ids (omitted: every enabled
  one). Validated, stored, answered ``202`` at once; the runner (:mod:`destinations._runner`)
  or the Celery workers do the work. ``Idempotency-Key`` makes it safe to send again.
* ``GET /deliveries/{id}``, ``GET /deliveries?result_set_id=&status=&page=`` — statuses.
* ``POST /deliveries/{id}/retry`` — the destinations that did not succeed, same ``now``.
* ``POST /destinations/verify`` (a destination from the body, not saved) and
  ``POST /destinations/{id}/verify`` (a stored one; stamps ``last_verified_at``), both
  counted by the verification rate limit.
* ``GET /webhooks``, ``PUT /webhooks`` (the account's default completion webhook; its
  signing secret is created with it and shown once), ``POST /webhooks/secret`` (a new secret,
  shown once).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import Destination, InvalidDestination, SecretsUnreadable, VerificationFailed, verify
from .._fetch import check_url
from .._records import guess_content_type
from .._runner import DeliveryRunner, inside_root
from .._template import sanitize_segment
from ..persistence import (
    DELIVERY_STATUSES,
    DeliveryNotFound,
    DeliveryStore,
    IdempotencyConflict,
    NewDelivery,
    NotRetryable,
    redact_url,
)
from ._body import read_params
from ._errors import NOT_FOUND, ApiError
from ._limits import check_lengths
from ._service import DestinationService, Pending

__all__ = ["DeliveryApi", "DeliveryLimits", "delivery_openapi", "delivery_routes"]

PAGE_SIZE: Final = 10
MAX_PAGE: Final = 1_000_000
MAX_ID_CHARS: Final = 255
#: A delivery body may list many files with long (presigned) URLs.
MAX_BODY_BYTES: Final = 1024 * 1024
DELIVERY_NOT_FOUND: Final = "Delivery not found"
_FIELDS: Final = frozenset(
    {"collection_id", "collection_name", "result_set_id", "files", "destination_ids", "webhook_url"}
)
_FILE_FIELDS: Final = frozenset({"name", "url", "path", "content_type"})
_MAX_LISTED: Final = 10


@dataclass(frozen=True, slots=True)
class DeliveryLimits:
    file_root: Path | None
    max_files: int
    max_bytes: int


class DeliveryApi:
    """What the delivery endpoints do, synchronously (run in the threadpool)."""

    def __init__(
        self,
        service: DestinationService,
        store: DeliveryStore,
        runner: DeliveryRunner,
        limits: DeliveryLimits,
        *,
        mode: str = "local",
    ) -> None:
        self.service = service
        self.store = store
        self.runner = runner
        self.limits = limits
        self.mode = mode

    # -- deliveries ----------------------------------------------------------------------------

    def submit(
        self, account_id: int, params: dict[str, Any], idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Validate and store a delivery; ``(delivery, created)``."""
        errors: dict[str, str] = {}
        for name in sorted(set(params) - _FIELDS)[:_MAX_LISTED]:
            errors[_shown(name)] = "unknown field"
        ids = {
            name: _text(params.get(name), name, MAX_ID_CHARS, errors)
            for name in ("collection_id", "collection_name", "result_set_id")
        }
        files = self._files(params.get("files"), errors)
        webhook_url = params.get("webhook_url")
        if webhook_url in (None, ""):
            webhook_url = None
        else:
            problem = check_url(webhook_url)
            if problem is not None:
                errors["webhook_url"] = problem
        requested = self._destination_ids(params.get("destination_ids"), errors)
        if errors:
            raise ApiError.invalid(errors)
        if webhook_url is not None and self.store.webhook_endpoint(account_id) is None:
            raise ApiError.invalid(
                {
                    "webhook_url": "this account has no webhook secret to sign events with yet; "
                    "create one first with PUT /webhooks"
                }
            )
        known = self.store.account_destinations(account_id, requested)
        if requested is None:
            chosen = [i for i, (_, enabled) in known.items() if enabled]
            if not chosen:
                raise ApiError.invalid(
                    {"destination_ids": "omitted, and this account has no enabled destination"}
                )
        else:
            unknown = [i for i in requested if i not in known]
            if unknown:
                shown = ", ".join(repr(i) for i in unknown[:_MAX_LISTED])
                extra = len(unknown) - _MAX_LISTED
                more = f" and {extra} more" if extra > 0 else ""
                raise ApiError.invalid({"destination_ids": f"unknown destination {shown}{more}"})
            chosen = requested
        targets = []
        for destination_id in chosen:
            name, enabled = known[destination_id]
            if enabled:
                targets.append((destination_id, name, "queued", "queued"))
            else:
                targets.append(
                    (destination_id, name, "skipped", "skipped: the destination is disabled")
                )
        request_hash = None
        if idempotency_key is not None:
            canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
            request_hash = hashlib.sha256(canonical.encode()).hexdigest()
        new = NewDelivery(
            account_id=account_id,
            collection_id=ids["collection_id"],
            collection_name=ids["collection_name"],
            result_set_id=ids["result_set_id"],
            files=files,
            now=datetime.now(UTC),
            mode=self.mode,
            targets=targets,
            webhook_url=webhook_url,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
        self.runner.start()
        owner = self.runner.reserve()
        if owner is not None:
            new = dataclasses.replace(
                new, lease_owner=owner, lease_seconds=self.runner.config.lease_seconds
            )
        started: str | None = None
        try:
            delivery, created = self.store.insert(new)
            if created and owner is not None and not delivery.final:
                started = delivery.id
        except IdempotencyConflict as exc:
            raise ApiError(
                409,
                "Idempotency-Key was already used with a different request; send the same "
                "body again, or use a new key for a new delivery",
            ) from exc
        finally:
            if owner is not None:
                self.runner.run_reserved(started)  # stored claimed: it starts now
        if created and started is None:
            self.runner.notify()
        return delivery.to_dict(), created

    def _files(self, value: object, errors: dict[str, str]) -> list[dict[str, str]]:
        if isinstance(value, str):  # a form body carries the list as JSON text
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                errors["files"] = "must be a list of {name, url} or {name, path} objects"
                return []
        if not isinstance(value, list) or not value:
            errors["files"] = "must be a non-empty list of {name, url} or {name, path} objects"
            return []
        if len(value) > self.limits.max_files:
            errors["files"] = f"at most {self.limits.max_files} files per delivery"
            return []
        out: list[dict[str, str]] = []
        segments: dict[str, str] = {}
        total = 0
        for index, item in enumerate(value):
            where = f"files[{index}]"
            if len(errors) >= _MAX_LISTED:
                break
            if not isinstance(item, dict):
                errors[where] = "must be an object {name, url} or {name, path}"
                continue
            extra = sorted(set(item) - _FILE_FIELDS)
            if extra:
                errors[f"{where}.{_shown(str(extra[0]))}"] = "unknown field"
                continue
            name = _text(item.get("name"), f"{where}.name", 255, errors)
            if not name:
                continue
            segment = sanitize_segment(name)
            if segment in segments:
                errors[f"{where}.name"] = (
                    f"gives the same object name as files[{segments[segment]}]"
                )
                continue
            segments[segment] = str(index)
            content_type = item.get("content_type")
            if content_type is None:
                content_type = guess_content_type(name)
            else:
                content_type = _text(content_type, f"{where}.content_type", 255, errors)
            has_url, has_path = item.get("url") is not None, item.get("path") is not None
            if has_url == has_path:
                errors[where] = "give exactly one of url or path"
                continue
            if has_url:
                problem = check_url(item["url"])
                if problem is not None:
                    errors[f"{where}.url"] = problem
                    continue
                out.append({"name": name, "url": item["url"], "content_type": content_type})
                continue
            path = _text(item["path"], f"{where}.path", 4096, errors)
            if not path:
                continue
            if self.limits.file_root is None:
                errors[f"{where}.path"] = (
                    "this server reads no files from its disk (no file root is configured); "
                    "give a url instead"
                )
                continue
            real = inside_root(self.limits.file_root, path)
            if real is None:
                # One message whatever is there: nothing about the disk outside the root leaks.
                errors[f"{where}.path"] = (
                    "must name a file inside the server's file root (a path relative to it)"
                )
                continue
            total += Path(real).stat().st_size
            out.append(
                {"name": name, "path": real, "shown_path": path, "content_type": content_type}
            )
        if total > self.limits.max_bytes:
            errors["files"] = f"the files add up to more than {self.limits.max_bytes} bytes"
        return out

    @staticmethod
    def _destination_ids(value: object, errors: dict[str, str]) -> list[str] | None:
        if value is None:
            return None
        if isinstance(value, str):  # form bodies: comma-separated
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not value:
            errors["destination_ids"] = "must be a non-empty list of destination ids (or omitted)"
            return None
        out: list[str] = []
        for index, item in enumerate(value[:100]):
            text = _text(item, f"destination_ids[{index}]", 64, errors)
            if text and text not in out:
                out.append(text)
        if len(value) > 100:
            errors["destination_ids"] = "at most 100 destinations per delivery"
        return out

    def get(self, account_id: int, delivery_id: str) -> dict[str, Any]:
        try:
            return self.store.get(delivery_id, account_id).to_dict()
        except DeliveryNotFound as exc:
            raise ApiError(404, DELIVERY_NOT_FOUND) from exc

    def list(self, account_id: int, query: Mapping[str, str]) -> dict[str, Any]:
        errors: dict[str, str] = {}
        page = 1
        if "page" in query:
            raw = query["page"]
            if raw.isdigit() and len(raw) <= 7 and 1 <= int(raw) <= MAX_PAGE:
                page = int(raw)
            else:
                errors["page"] = f"must be a whole number from 1 to {MAX_PAGE}"
        status = query.get("status") or None
        if status is not None and status not in DELIVERY_STATUSES:
            errors["status"] = f"must be one of {', '.join(DELIVERY_STATUSES)}"
        result_set_id = query.get("result_set_id") or None
        if result_set_id is not None:
            _text(result_set_id, "result_set_id", MAX_ID_CHARS, errors)
        if errors:
            raise ApiError.invalid(errors)
        found, total = self.store.page(
            account_id,
            offset=(page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
            result_set_id=result_set_id,
            status=status,
        )
        return {
            "current_page": page,
            "total_pages": max(math.ceil(total / PAGE_SIZE), 1),
            "total_results": total,
            "deliveries": [d.to_dict(webhook_attempts=False) for d in found],
        }

    def retry(self, account_id: int, delivery_id: str) -> dict[str, Any]:
        try:
            delivery = self.store.retry(account_id, delivery_id)
        except DeliveryNotFound as exc:
            raise ApiError(404, DELIVERY_NOT_FOUND) from exc
        except NotRetryable as exc:
            raise ApiError(409, f"Nothing to retry: {exc}") from exc
        self.runner.start()
        self.runner.notify()
        return delivery.to_dict()

    # -- verification without saving -----------------------------------------------------------

    def prepare_verify_new(self, account_id: int, params: dict[str, Any]) -> Pending:
        """Parse the destination in the body (as a create would, never saved) and take a
        verification token; the returned work verifies it."""
        service = self.service
        if "id" in params:
            raise ApiError.invalid(
                {
                    "id": "is not part of a verification without saving; to verify a stored "
                    "destination use POST /destinations/{id}/verify"
                }
            )
        check_lengths(params)
        with service._confined(account_id, params.get("type")):
            destination = service._parse({**params, "enabled": params.get("enabled", True)})
        service._take_verification(account_id)
        return Pending(True, lambda: self._verify(destination))

    def prepare_verify_stored(self, account_id: int, destination_id: str) -> Pending:
        try:
            destination = self.service.repository.find(destination_id, account_id)
        except InvalidDestination as exc:
            raise ApiError.invalid(exc.errors) from exc
        except SecretsUnreadable as exc:
            raise ApiError(
                409,
                "The stored destination's secrets cannot be decrypted on this server; ask the "
                "operator (the encryption keys changed)",
            ) from exc
        if destination is None:
            raise ApiError(404, NOT_FOUND)
        self.service._take_verification(account_id)

        def run() -> dict[str, Any]:
            report = self._verify(destination)
            if not self.store.mark_verified(account_id, destination_id):
                raise ApiError(404, NOT_FOUND)  # deleted meanwhile
            return {**report, "destination": self.service.get(account_id, destination_id)}

        return Pending(True, run)

    def _verify(self, destination: Destination) -> dict[str, Any]:
        try:
            report = verify(destination, timeout=self.service.settings.verify_timeout)
        except VerificationFailed as exc:
            extra: dict[str, Any] = {
                "connectivity_problem": True,
                "step": exc.step,
                "code": exc.code,
            }
            if exc.provider_code:
                extra["provider_code"] = exc.provider_code
            raise ApiError(400, f"Destination verification failed: {exc.message}", **extra) from exc
        return {
            "verification": {
                "type": report.destination_type,
                "probe_key": report.probe_key,
                "seconds": round(report.total_seconds, 3),
                "warnings": list(report.warnings),
            }
        }

    # -- webhooks ------------------------------------------------------------------------------

    def get_webhook(self, account_id: int) -> dict[str, Any]:
        endpoint = self.store.webhook_endpoint(account_id)
        if endpoint is None:
            return {"webhook": {"url": None, "has_secret": False, "secret_created_at": None}}
        return {"webhook": _webhook(endpoint.url, endpoint.secret_created_at)}

    def put_webhook(self, account_id: int, params: dict[str, Any]) -> dict[str, Any]:
        extra = sorted(set(params) - {"url"})
        if extra:
            raise ApiError.invalid({_shown(extra[0]): "unknown field"})
        url = params.get("url")
        if url in (None, ""):
            url = None
        else:
            problem = check_url(url)
            if problem is not None:
                raise ApiError.invalid({"url": problem})
        endpoint = self.store.set_webhook(account_id, url)
        return {"webhook": _webhook(endpoint.url, endpoint.secret_created_at, endpoint.secret)}

    def rotate_secret(self, account_id: int) -> dict[str, Any]:
        endpoint = self.store.set_webhook(account_id, None, set_url=False, rotate=True)
        return {"webhook": _webhook(endpoint.url, endpoint.secret_created_at, endpoint.secret)}


def _webhook(url: str | None, created: datetime, secret: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "url": redact_url(url),
        "has_secret": True,
        "secret_created_at": created.astimezone(UTC).isoformat(timespec="seconds").replace(
            "+00:00", "Z"
        ),
    }
    if secret is not None:
        out["secret"] = secret
        out["message"] = "The webhook secret is shown only this once; store it now."
    return out


def _shown(name: str) -> str:
    """A field name as an error message may show it (bounded, printable)."""
    safe = "".join(c if c.isprintable() else "?" for c in name[:64])
    return safe.encode("utf-8", "replace").decode()


def _text(value: object, name: str, max_chars: int, errors: dict[str, str]) -> str:
    """``value`` as a non-empty string of at most ``max_chars`` characters, valid UTF-8,
    without NUL; otherwise the problem goes into ``errors`` and ``""`` comes back."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value) if isinstance(value, int) and abs(value) < 10**18 else value
    if not isinstance(value, str) or not value.strip():
        errors[name] = "required (a non-empty string)"
        return ""
    if len(value) > max_chars:
        errors[name] = f"must be at most {max_chars} characters"
        return ""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        errors[name] = "must be valid UTF-8 text"
        return ""
    if "\x00" in value:
        errors[name] = "must not contain NUL characters"
        return ""
    return value


# -- HTTP ------------------------------------------------------------------------------------


def _ok(status: int = 200, headers: Mapping[str, str] | None = None, **body: Any) -> JSONResponse:
    return JSONResponse(
        {"request_info": {"success": True}, **body}, status_code=status, headers=headers
    )


Endpoint = Callable[[Request, DeliveryApi, int], Awaitable[Response]]


def _endpoint(work: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate (a bad key is 401 before any body is read), then ``work``; an
    :class:`ApiError` becomes the envelope."""

    async def wrapped(request: Request) -> Response:
        api: DeliveryApi = request.app.state.deliveries
        try:
            account = await run_in_threadpool(
                api.service.authenticate, request.query_params.get("api_key")
            )
            return await work(request, api, account)
        except ApiError as exc:
            return JSONResponse(
                {"request_info": {"success": False, "message": exc.message, **exc.extra}},
                status_code=exc.status,
                headers=exc.headers or None,
            )

    return wrapped


async def _params(request: Request, limit: int | None = None) -> dict[str, Any]:
    """The body as the other write endpoints read it (JSON or a form, 413, 408)."""
    state = request.app.state
    return await read_params(request, limit or state.max_body_bytes, state.body_timeout)


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255 or not key.isprintable() or not key.isascii():
        raise ApiError.invalid(
            {"Idempotency-Key": "must be 1 to 255 printable ASCII characters"}
        )
    return key


@_endpoint
async def submit(request: Request, api: DeliveryApi, account: int) -> Response:
    key = _idempotency_key(request)
    params = await _params(request, MAX_BODY_BYTES)
    delivery, created = await run_in_threadpool(api.submit, account, params, key)
    headers = None if created else {"Idempotent-Replayed": "true"}
    return _ok(202, headers, delivery=delivery)


@_endpoint
async def list_deliveries(request: Request, api: DeliveryApi, account: int) -> Response:
    query = dict(request.query_params)
    return _ok(**await run_in_threadpool(api.list, account, query))


@_endpoint
async def get_delivery(request: Request, api: DeliveryApi, account: int) -> Response:
    delivery = await run_in_threadpool(api.get, account, request.path_params["id"])
    return _ok(delivery=delivery)


@_endpoint
async def retry_delivery(request: Request, api: DeliveryApi, account: int) -> Response:
    delivery = await run_in_threadpool(api.retry, account, request.path_params["id"])
    return _ok(202, delivery=delivery)


@_endpoint
async def verify_new(request: Request, api: DeliveryApi, account: int) -> Response:
    params = await _params(request)
    pending = await run_in_threadpool(api.prepare_verify_new, account, params)
    return _ok(**await api.service.execute(account, pending))  # on the verification pool


@_endpoint
async def verify_stored(request: Request, api: DeliveryApi, account: int) -> Response:
    pending = await run_in_threadpool(api.prepare_verify_stored, account, request.path_params["id"])
    return _ok(**await api.service.execute(account, pending))


@_endpoint
async def get_webhook(request: Request, api: DeliveryApi, account: int) -> Response:
    return _ok(**await run_in_threadpool(api.get_webhook, account))


@_endpoint
async def put_webhook(request: Request, api: DeliveryApi, account: int) -> Response:
    params = await _params(request)
    return _ok(**await run_in_threadpool(api.put_webhook, account, params))


@_endpoint
async def rotate_secret(request: Request, api: DeliveryApi, account: int) -> Response:
    return _ok(**await run_in_threadpool(api.rotate_secret, account))


def delivery_routes() -> list[Route]:
    return [
        Route("/deliveries", submit, methods=["POST"]),
        Route("/deliveries", list_deliveries, methods=["GET"]),
        Route("/deliveries/{id}", get_delivery, methods=["GET"]),
        Route("/deliveries/{id}/retry", retry_delivery, methods=["POST"]),
        Route("/destinations/verify", verify_new, methods=["POST"]),
        Route("/destinations/{id}/verify", verify_stored, methods=["POST"]),
        Route("/webhooks", get_webhook, methods=["GET"]),
        Route("/webhooks", put_webhook, methods=["PUT"]),
        Route("/webhooks/secret", rotate_secret, methods=["POST"]),
    ]


# -- OpenAPI ---------------------------------------------------------------------------------


def delivery_openapi() -> tuple[dict[str, Any], dict[str, Any]]:
    """The paths and component schemas of these endpoints, for ``/openapi.json``."""

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    def envelope(**extra: Any) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["request_info"],
            "properties": {"request_info": ref("RequestInfo"), **extra},
        }

    text = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}
    when = {"type": ["string", "null"], "format": "date-time"}
    log = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"date_time": {"type": "string"}, "text": {"type": "string"}},
        },
    }
    schemas: dict[str, Any] = {
        "DeliveryFile": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 255},
                "url": {
                    "type": "string",
                    "format": "uri",
                    "description": "An https URL the server fetches (through the endpoint "
                    "guard). Give url or path.",
                },
                "path": {
                    "type": "string",
                    "description": "A file inside the server's DESTINATIONS_FILE_ROOT, "
                    "relative to it. Give url or path.",
                },
                "content_type": {"type": "string", "maxLength": 255},
            },
        },
        "DeliveryRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["collection_id", "collection_name", "result_set_id", "files"],
            "properties": {
                "collection_id": text,
                "collection_name": text,
                "result_set_id": text,
                "files": {"type": "array", "minItems": 1, "items": ref("DeliveryFile")},
                "destination_ids": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "string"},
                    "description": "The account's destinations; omitted: every enabled one.",
                },
                "webhook_url": {
                    "type": "string",
                    "format": "uri",
                    "description": "Where the signed delivery.completed event goes (else "
                    "the account's default from PUT /webhooks).",
                },
            },
        },
        "DestinationDeliveryStatus": {
            "type": "object",
            "properties": {
                "destination_id": {"type": "string"},
                "destination_name": {"type": ["string", "null"]},
                "destination_status": {
                    "type": "object",
                    "properties": {
                        "status": {
                            "type": "string",
                            "enum": [
                                "queued", "delivering", "retrying", "success", "failed",
                                "skipped",
                            ],
                        },
                        "log": log,
                        "keys": {"type": "array", "items": {"type": "string"}},
                        "bytes": {"type": "integer"},
                        "seconds": {"type": "number"},
                        "attempts": {"type": "integer"},
                    },
                },
            },
        },
        "Delivery": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "status": {"type": "string", "enum": list(DELIVERY_STATUSES)},
                "collection_id": {"type": "string"},
                "collection_name": {"type": "string"},
                "result_set_id": {"type": "string"},
                "now": {"type": "string", "format": "date-time"},
                "files": {"type": "array", "items": {"type": "object"}},
                "run": {"type": "integer"},
                "attempts": {"type": "integer"},
                "error": {"type": ["string", "null"]},
                "created_at": when,
                "updated_at": when,
                "finished_at": when,
                "webhook_url": {"type": ["string", "null"]},
                "destinations": {
                    "type": "array",
                    "items": ref("DestinationDeliveryStatus"),
                },
                "webhook": {"type": "object"},
            },
        },
        "Webhook": {
            "type": "object",
            "properties": {
                "url": {"type": ["string", "null"]},
                "has_secret": {"type": "boolean"},
                "secret_created_at": when,
                "secret": {
                    "type": "string",
                    "description": "Only in the response that created it (shown once).",
                },
            },
        },
    }
    api_key = {"name": "api_key", "in": "query", "required": True, "schema": {"type": "string"}}
    path_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    error = {"content": {"application/json": {"schema": ref("Error")}}}

    def answers(status: str, ok: dict[str, Any], **codes: str) -> dict[str, Any]:
        out = {
            status: {"description": "Success", "content": {"application/json": {"schema": ok}}},
            "401": {"description": "Supplied api_key is not valid", **error},
        }
        for code, reason in codes.items():
            out[code.removeprefix("c")] = {"description": reason, **error}
        return out

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "application/x-www-form-urlencoded": {"schema": schema},
            },
        }

    one = envelope(delivery=ref("Delivery"))
    webhook = envelope(webhook=ref("Webhook"))
    verification = envelope(
        verification={
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "probe_key": {"type": "string"},
                "seconds": {"type": "number"},
                "warnings": {"type": "array", "items": {"type": "string"}},
            },
        }
    )
    paths = {
        "/deliveries": {
            "post": {
                "summary": "Submit a delivery (202 at once; the work runs in the background)",
                "parameters": [
                    api_key,
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 255},
                        "description": "The same key and body within 24 h return the "
                        "original delivery; another body is 409.",
                    },
                ],
                "requestBody": body(ref("DeliveryRequest")),
                "responses": answers(
                    "202", one, c400="Invalid parameters (naming the field)",
                    c409="Idempotency-Key used with another body", c413="Body too large",
                ),
            },
            "get": {
                "summary": f"The account's deliveries, newest first ({PAGE_SIZE} per page)",
                "parameters": [
                    api_key,
                    {"name": "result_set_id", "in": "query", "required": False,
                     "schema": {"type": "string"}},
                    {"name": "status", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": list(DELIVERY_STATUSES)}},
                    {"name": "page", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
                ],
                "responses": answers(
                    "200",
                    envelope(
                        current_page={"type": "integer"},
                        total_pages={"type": "integer"},
                        total_results={"type": "integer"},
                        deliveries={"type": "array", "items": ref("Delivery")},
                    ),
                    c400="Invalid parameters",
                ),
            },
        },
        "/deliveries/{id}": {
            "get": {
                "summary": "One delivery and its per-destination statuses",
                "parameters": [api_key, path_id],
                "responses": answers("200", one, c404="Not found"),
            }
        },
        "/deliveries/{id}/retry": {
            "post": {
                "summary": "Deliver again to the destinations that did not succeed (same keys)",
                "parameters": [api_key, path_id],
                "responses": answers(
                    "202", one, c404="Not found", c409="Still running, or nothing failed"
                ),
            }
        },
        "/destinations/verify": {
            "post": {
                "summary": "Verify a destination without saving it",
                "parameters": [api_key],
                "requestBody": body(ref("DestinationParams")),
                "responses": answers(
                    "200", verification,
                    c400="Invalid parameters or failed verification (connectivity_problem)",
                    c413="Body too large", c429="Too many verification attempts",
                ),
            }
        },
        "/destinations/{id}/verify": {
            "post": {
                "summary": "Verify a stored destination again (updates last_verified_at)",
                "parameters": [api_key, path_id],
                "responses": answers(
                    "200",
                    {**verification, "properties": {**verification["properties"],
                                                    "destination": ref("Destination")}},
                    c400="Failed verification (connectivity_problem)", c404="Not found",
                    c409="Stored secrets cannot be decrypted", c429="Too many verification "
                    "attempts",
                ),
            }
        },
        "/webhooks": {
            "get": {
                "summary": "The account's default completion webhook (never its secret)",
                "parameters": [api_key],
                "responses": answers("200", webhook),
            },
            "put": {
                "summary": "Set the default webhook URL (a signing secret is created with "
                "the first one and shown once)",
                "parameters": [api_key],
                "requestBody": body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"url": {"type": ["string", "null"], "format": "uri"}},
                    }
                ),
                "responses": answers("200", webhook, c400="Invalid parameters",
                                     c413="Body too large"),
            },
        },
        "/webhooks/secret": {
            "post": {
                "summary": "Replace the webhook signing secret (the new one shown once)",
                "parameters": [api_key],
                "responses": answers("200", webhook),
            }
        },
    }
    return paths, schemas


def build_deliveries(
    service: DestinationService,
    *,
    database_url: str,
    file_root: str | os.PathLike[str] | None = None,
    broker_url: str | None = None,
) -> DeliveryApi:
    """The delivery endpoints' state for one app: settings from
    :func:`destinations._settings.settings` (arguments win), a runner (not started: the
    app's lifespan starts it, or the first delivery does), Celery when a broker is set."""
    from .._runner import RunnerConfig
    from .._settings import settings
    from .._webhooks import WebhookPolicy

    env = settings()
    root_setting = file_root if file_root is not None else env.file_root
    root: Path | None = None
    if root_setting is not None:
        root = Path(os.path.realpath(root_setting))
        if not root.is_dir():
            raise ValueError(f"file root {str(root_setting)!r} is not an existing directory")
    broker = broker_url or env.broker_url
    celery_app = None
    if broker:
        from ..celery import create_celery

        celery_app = create_celery(broker, database_url, queue=env.queue)
    config = RunnerConfig(
        file_root=root,
        workers=env.delivery_workers,
        concurrency=env.delivery_concurrency,
        lease_seconds=env.delivery_lease_seconds,
        poll_interval=min(1.0, env.delivery_lease_seconds / 3),
        max_delivery_bytes=env.max_delivery_bytes,
        max_fetch_bytes=env.max_fetch_bytes,
        fetch_timeout=env.fetch_timeout,
        webhook=WebhookPolicy(
            timeout=env.webhook_timeout,
            initial=env.webhook_retry_initial,
            max_wait=env.webhook_retry_max_wait,
            window=env.webhook_retry_window,
        ),
        queue=env.queue,
    )
    store = DeliveryStore(service.repository.engine, service.repository.box)
    runner = DeliveryRunner(store, service.repository, config, celery_app=celery_app)
    limits = DeliveryLimits(root, env.max_delivery_files, env.max_delivery_bytes)
    return DeliveryApi(
        service, store, runner, limits, mode="celery" if celery_app is not None else "local"
    )
