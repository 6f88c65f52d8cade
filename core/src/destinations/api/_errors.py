"""The API's one refusal type: an HTTP status and the ``request_info`` it answers with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["NOT_FOUND", "UNAUTHORIZED", "ApiError"]

NOT_FOUND = "Destination not found"
UNAUTHORIZED = "Supplied api_key is not valid"


class ApiError(Exception):
    """A refusal: HTTP ``status``, a message for ``request_info``, and extra keys for it.
    ``headers`` go on the response (``Retry-After``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra

    @classmethod
    def invalid(cls, errors: Mapping[str, str]) -> ApiError:
        detail = "; ".join(f"{field}: {message}" for field, message in errors.items())
        return cls(400, f"Invalid parameters: {detail}", errors=dict(errors))
