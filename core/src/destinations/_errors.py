"""Every exception `destinations` raises.

The tree::

    DestinationsError
    ├── InvalidDestination (also ValueError)   bad input; .errors maps field -> message
    │   ├── InvalidTemplate                    bad path template; .position, .template
    │   └── UnknownType                        no installed plugin provides the type
    ├── PluginLoadError (also ImportError)     a plugin failed to import; names the distribution
    ├── StoreError                             a storage call failed; .code, .transient
    │   │                                      (also TimeoutError / PermissionError /
    │   │                                      ConnectionError where the code fits)
    │   ├── EndpointNotAllowed                 the endpoint guard refused a connection
    │   └── ObjectKeyTooLong (also ValueError) an object key over 1024 UTF-8 bytes
    ├── SourceUnreadable (also OSError)        a result file's path cannot be read
    ├── SecretsUnreadable                      stored secrets cannot be decrypted with any key
    └── VerificationFailed                     verify-then-commit refused; .step, .error

No message ever contains a secret: stores build theirs from codes and field names, never
from request headers or credentials.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final, Literal, Self

__all__ = [
    "BUILTIN_DISTRIBUTIONS",
    "CODES",
    "DestinationsError",
    "EndpointNotAllowed",
    "ErrorCode",
    "InvalidDestination",
    "InvalidTemplate",
    "ObjectKeyTooLong",
    "PluginLoadError",
    "SecretsUnreadable",
    "SourceUnreadable",
    "StoreError",
    "UnknownType",
    "VerificationFailed",
    "exception_chain",
    "install_hint",
    "transient_status",
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
    "host_key_mismatch",
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
    """No installed plugin provides the requested destination type.

    The message (``errors["type"]``) is for whoever sent the destination, an HTTP API
    customer included: it names the installed types and nothing about installing. What the
    *operator* can install is :attr:`install_hint` (``pip install destinations-s3``), from
    :func:`install_hint`: shown by the CLI and logged by the API, never sent to a customer.
    """

    def __init__(self, name: str, available: list[str]) -> None:
        self.type_name = name
        known = ", ".join(available) or "none"
        super().__init__({"type": f"unknown destination type {name!r}; installed types: {known}"})

    @property
    def install_hint(self) -> str | None:
        return install_hint(self.type_name)


#: The distributions of the built-in types (this repository's plugins): type -> distribution.
BUILTIN_DISTRIBUTIONS: Final[Mapping[str, str]] = {
    "local": "destinations",
    "s3": "destinations-s3",
    "s3compatible": "destinations-s3",
    "gcs": "destinations-gcs",
    "azure": "destinations-azure",
    "oss": "destinations-oss",
    "sftp": "destinations-sftp",
}


def install_hint(type_name: object, distribution: str | None = None) -> str | None:
    """What an operator runs to get type ``type_name``, for the operator's log and CLI only.

    ``distribution`` is the one installed entry-point metadata names (from
    ``destinations._plugins.host().distribution_of``: a broken install), else a built-in
    type's (:data:`BUILTIN_DISTRIBUTIONS`); for any other name there is no hint, because a
    guessed distribution name may not exist, or may be someone else's.
    """
    if not isinstance(type_name, str) or not type_name.strip():
        return None
    name = type_name.strip().lower()
    dist = distribution or BUILTIN_DISTRIBUTIONS.get(name)
    if dist is None:
        return None
    return (
        f"type {name!r} is provided by the distribution {dist}: pip install {dist} "
        "(then restart the server or worker: installed types are read at start)"
    )


class PluginLoadError(DestinationsError, ImportError):
    """A plugin's module could not be imported; the message names what to install."""


class StoreError(DestinationsError):
    """A storage operation failed.

    ``code`` is one of :data:`CODES`. ``provider_code`` carries the provider's own error code
    as the plugin reports it, when there is one; ``status`` the
    HTTP status the provider answered with, when there was one.

    ``transient`` says whether another attempt may succeed. The plugin's error mapper
    decides it (it knows its provider's throttling and server-busy codes); when it leaves
    ``None``, one generic rule applies that knows no provider: ``timeout`` and
    ``endpoint_unreachable`` are transient, an HTTP ``status`` of 408, 429 or 5xx is
    transient, everything else is permanent. Delivery, the Celery task and the file fetcher
    all read this one flag.

    Where a builtin exception fits, the error is also that builtin, keeping ``.code``: a
    ``timeout`` is also a :class:`TimeoutError`, ``access_denied`` and
    ``invalid_credentials`` also a :class:`PermissionError`, ``endpoint_unreachable`` also a
    :class:`ConnectionError`.
    """

    code: ErrorCode
    provider_code: str | None
    status: int | None
    message: str

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        if cls is StoreError:
            code = args[0] if args else kwargs.get("code")
            builtin = _BUILTIN_KINDS.get(code) if isinstance(code, str) else None
            if builtin is not None:
                return super(StoreError, builtin).__new__(builtin)  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        provider_code: str | None = None,
        status: int | None = None,
        transient: bool | None = None,
    ) -> None:
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}; expected one of {sorted(CODES)}")
        super().__init__(message)
        self.args = (message,)
        self.code = code
        self.provider_code = provider_code
        self.status = status
        self.message = message
        self._transient = transient

    @property
    def transient(self) -> bool:
        """Whether another attempt may succeed (the plugin's word, else the generic rule)."""
        if self._transient is not None:
            return self._transient
        if self.code in _TRANSIENT_CODES:
            return True
        return self.status is not None and transient_status(self.status)

    def __str__(self) -> str:
        suffix = f" [{self.provider_code}]" if self.provider_code else ""
        return f"{self.code}: {self.message}{suffix}"

    def __repr__(self) -> str:
        return f"StoreError({self.code!r}, {self.message!r})"

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_store_error,
            (self.code, self.message, self.provider_code, self.status, self._transient),
        )


def _rebuild_store_error(
    code: ErrorCode,
    message: str,
    provider_code: str | None,
    status: int | None,
    transient: bool | None,
) -> StoreError:
    return StoreError(
        code, message, provider_code=provider_code, status=status, transient=transient
    )


def transient_status(status: int) -> bool:
    """The generic rule for an HTTP answer: 408, 429 and 5xx are worth another attempt."""
    return status in (408, 429) or 500 <= status <= 599


#: Codes that are transient unless the plugin says otherwise.
_TRANSIENT_CODES: Final[frozenset[str]] = frozenset({"timeout", "endpoint_unreachable"})


class _StoreTimeout(StoreError, TimeoutError):
    """A ``timeout`` StoreError (also a :class:`TimeoutError`)."""


class _StorePermission(StoreError, PermissionError):
    """An ``access_denied``/``invalid_credentials`` StoreError (also a PermissionError)."""


class _StoreUnreachable(StoreError, ConnectionError):
    """An ``endpoint_unreachable`` StoreError (also a :class:`ConnectionError`)."""


for _kind in (_StoreTimeout, _StorePermission, _StoreUnreachable):
    _kind.__module__ = "destinations"
    _kind.__str__ = StoreError.__str__  # type: ignore[method-assign]
    _kind.__reduce__ = StoreError.__reduce__  # type: ignore[method-assign]
    _kind.__repr__ = StoreError.__repr__  # type: ignore[method-assign]

_BUILTIN_KINDS: Final[dict[str, type[StoreError]]] = {
    "timeout": _StoreTimeout,
    "access_denied": _StorePermission,
    "invalid_credentials": _StorePermission,
    "endpoint_unreachable": _StoreUnreachable,
}


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

    ``step`` is ``"put"`` or ``"delete"``; ``error`` is the :class:`StoreError` the step
    failed with (``code``, ``message``, ``provider_code`` and ``status`` read through to it);
    ``probe_key`` is where the probe was written; ``probe_left`` says whether it may still be
    there. ``message`` may add what to do about a probe left behind.
    """

    def __init__(
        self,
        step: Step,
        error: StoreError,
        *,
        probe_key: str,
        probe_left: bool = False,
        message: str | None = None,
    ) -> None:
        self.step: Step = step
        self.error = error
        self.message = error.message if message is None else message
        self.probe_key = probe_key
        self.probe_left = probe_left
        super().__init__(f"verification failed at step {step!r} ({error.code}): {self.message}")

    @property
    def code(self) -> ErrorCode:
        return self.error.code

    @property
    def provider_code(self) -> str | None:
        return self.error.provider_code

    @property
    def status(self) -> int | None:
        return self.error.status


class SourceUnreadable(DestinationsError, OSError):
    """A result file's path cannot be read (missing, a directory, no permission), found
    before anything is uploaded. ``name`` is the result file, ``path`` the path given."""

    def __init__(self, name: str, path: str, cause: OSError) -> None:
        reason = cause.strerror or type(cause).__name__
        message = f"result file {name!r}: cannot read {path!r} ({reason})"
        super().__init__(message)
        self.args = (message,)
        self.name = name
        self.path = path

    def __str__(self) -> str:
        return str(self.args[0])


class SecretsUnreadable(DestinationsError):
    """Stored secrets cannot be decrypted with any configured encryption key.

    The message names where the keys come from (a key file or an environment variable) and
    what to do; it never contains a key or a secret.
    """


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
