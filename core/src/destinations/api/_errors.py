"""The API's one refusal type: an HTTP status and the ``request_info`` it answers with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_REPORTED_ERRORS", "NOT_FOUND", "UNAUTHORIZED", "ApiError"]

#: Fields one error response names at most; ``more_errors`` says how many were left out.
MAX_REPORTED_ERRORS = 20

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
        """400 naming each field and what is wrong with it: the first
        :data:`MAX_REPORTED_ERRORS` of them, and how many more there were."""
        shown = dict(list(errors.items())[:MAX_REPORTED_ERRORS])
        detail = "; ".join(f"{field}: {message}" for field, message in shown.items())
        more = len(errors) - len(shown)
        if more:
            return cls(
                400,
                f"Invalid parameters: {detail}; and {more} more",
                errors=shown,
                more_errors=more,
            )
        return cls(400, f"Invalid parameters: {detail}", errors=shown)
