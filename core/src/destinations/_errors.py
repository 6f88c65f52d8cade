"""Every exception `destinations` raises.

The tree::

    DestinationsError
    ├── InvalidDestination (also ValueError)   bad input; .errors maps field -> message
    │   ├── InvalidTemplate                    bad path template; .position, .template
    │   └── UnknownType                        no installed plugin provides the type
    ├── PluginLoadError (also ImportError)     a plugin failed to import; names the distribution
    ├── StoreError                             a storage call failed; .code, .provider_code
    │   ├── EndpointNotAllowed                 the endpoint guard refused a connection
    │   └── ObjectKeyTooLong (also ValueError) an object key over 1024 UTF-8 bytes
    └── VerificationFailed                     verify-then-commit refused; .step, .code

No message ever contains a secret: stores build theirs from codes and field names, never
from request headers or credentials.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final, Literal

__all__ = [
    "CODES",
    "DestinationsError",
    "EndpointNotAllowed",
    "ErrorCode",
    "InvalidDestination",
    "InvalidTemplate",
    "ObjectKeyTooLong",
    "PluginLoadError",
    "StoreError",
    "UnknownType",
    "VerificationFailed",
    "exception_chain",
]

ErrorCode = Literal[
    "invalid_credentials",
    "access_denied",
    "bucket_not_found",
    "wrong_region",
    "endpoint_unreachable",
    "endpoint_not_allowed",
    "timeout",
    "tls_error",
    "provider_error",
]
CODES: Final[frozenset[str]] = frozenset(ErrorCode.__args__)  # type: ignore[attr-defined]

Step = Literal["put", "delete"]


class DestinationsError(Exception):
    """Base class of every error this package raises."""


class InvalidDestination(DestinationsError, ValueError):
    """The destination's parameters are invalid.

    ``errors`` maps each offending field name to a message saying what is wrong with it.
    """

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors: dict[str, str] = dict(errors)
        super().__init__("; ".join(f"{field}: {msg}" for field, msg in self.errors.items()))


class InvalidTemplate(InvalidDestination):
    """A path template cannot be compiled.

    ``position`` is the 0-based index in ``template`` where the problem starts.
    """

    def __init__(self, message: str, *, template: str, position: int, field: str = "path_prefix"):
        self.template = template
        self.position = position
        self.reason = message
        pointer = f"{template!r} at position {position}"
        super().__init__({field: f"{message} ({pointer})"})

    def for_field(self, field: str) -> InvalidTemplate:
        """The same error, reported under another field name (e.g. ``s3_path_prefix``)."""
        return InvalidTemplate(
            self.reason, template=self.template, position=self.position, field=field
        )


class UnknownType(InvalidDestination):
    """No installed plugin provides the requested destination type."""

    def __init__(self, name: str, available: list[str]) -> None:
        self.type_name = name
        known = ", ".join(available) or "none"
        super().__init__(
            {
                "type": f"unknown destination type {name!r}; installed types: {known} "
                f"(a plugin providing it may need installing, e.g. `pip install "
                f"destinations-{name}`)"
            }
        )


class PluginLoadError(DestinationsError, ImportError):
    """A plugin's module could not be imported; the message names what to install."""


class StoreError(DestinationsError):
    """A storage operation failed.

    ``code`` is one of :data:`CODES`. ``provider_code`` carries the provider's own error code
    (``SignatureDoesNotMatch``, ``ContainerNotFound``…) when there is one.
    """

    def __init__(self, code: ErrorCode, message: str, *, provider_code: str | None = None):
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}; expected one of {sorted(CODES)}")
        self.code: ErrorCode = code
        self.provider_code = provider_code
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        suffix = f" [{self.provider_code}]" if self.provider_code else ""
        return f"{self.code}: {self.message}{suffix}"


class EndpointNotAllowed(StoreError):
    """The endpoint guard refused a connection (code ``endpoint_not_allowed``).

    ``address`` is the refused address (or host, for plain http); ``rule`` names the rule
    (``"a loopback address"``, ``"plain http"``…). Deliberately not an :class:`OSError`: HTTP
    libraries then pass it through instead of treating it as a network failure to retry.
    """

    def __init__(self, message: str, *, address: str, rule: str) -> None:
        super().__init__("endpoint_not_allowed", message, provider_code=None)
        self.address = address
        self.rule = rule


class ObjectKeyTooLong(StoreError, ValueError):
    """An object key would exceed 1024 UTF-8 bytes; keys are never truncated."""

    def __init__(self, key: str) -> None:
        size = len(key.encode())
        super().__init__(
            "provider_error",
            f"object key is {size} UTF-8 bytes, over the 1024-byte limit "
            f"(starts {key[:60]!r}); shorten the path prefix or the file name",
            provider_code="KeyTooLongError",
        )
        self.key = key


class VerificationFailed(DestinationsError):
    """Writing or deleting the probe object failed, so the change was not committed.

    ``step`` is ``"put"`` or ``"delete"``; ``code`` is one of :data:`CODES`; ``probe_key``
    is where the probe was written; ``probe_left`` says whether it may still be there.
    """

    def __init__(
        self,
        step: Step,
        code: ErrorCode,
        message: str,
        *,
        probe_key: str,
        provider_code: str | None = None,
        probe_left: bool = False,
    ) -> None:
        self.step: Step = step
        self.code: ErrorCode = code
        self.message = message
        self.probe_key = probe_key
        self.provider_code = provider_code
        self.probe_left = probe_left
        super().__init__(f"verification failed at step {step!r} ({code}): {message}")


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps, each once: ``__cause__``, ``__context__``, and
    what SDKs hide in ``reason`` (urllib3), ``inner_exception`` (azure-core), ``exception``
    (oss2) and ``args``. For mapping an SDK error by what is underneath it."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = (
            current.__cause__,
            current.__context__,
            getattr(current, "reason", None),
            getattr(current, "inner_exception", None),
            getattr(current, "exception", None),
            *current.args,
        )
        todo.extend(e for e in nested if isinstance(e, BaseException))
