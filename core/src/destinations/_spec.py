"""The destination spec: flat seed-style parameters in, a validated :class:`Destination` out.

The common fields (``name``, ``enabled``, ``manifest``, ``compression``…) are declared once,
in :class:`CommonFields`. Each installed type's full model is the common fields plus the
plugin's own field model, with ``type`` as a ``Literal`` discriminator
(:func:`destination_model`); :func:`destination_union` is the discriminated union of every
installed type. :func:`parse_destination` resolves the discriminator first and validates with
that member of the union — the same model the union would pick — so parsing one type imports
only its plugin (building the whole union costs about 30 ms in a fresh process). The OpenAPI
document and ``destinations types --json`` are generated from the same models, so a rule, a
bound or a description is written in one place.
"""

from __future__ import annotations

import functools
import logging
import threading
import unicodedata
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    field_validator,
)

from . import _records
from ._errors import InvalidDestination, InvalidTemplate, PluginLoadError, UnknownType
from ._guard import check_endpoint_scheme
from ._plugins import available_types, get_type
from ._records import Destination
from ._template import DEFAULT_FILE_NAME_TEMPLATE, FileNameTemplate, PathTemplate
from .plugin import DestinationType

__all__ = [
    "COMMON_FIELDS",
    "CommonFields",
    "Destination",
    "destination_model",
    "destination_union",
    "parse_bool",
    "parse_destination",
]

log = logging.getLogger("destinations.spec")

_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


def parse_bool(value: object) -> bool:
    """``True``/``False``, ``"true"``/``"false"`` (any case), ``"1"``/``"0"``, 1/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    raise ValueError("must be true or false")


def _flag(value: object, info: ValidationInfo) -> bool:
    field = info.field_name or "flag"
    if value is None:
        raise InvalidDestination({field: _MISSING.get(field, "required")})
    try:
        return parse_bool(value)
    except ValueError as exc:
        raise InvalidDestination({field: str(exc)}) from None


def _name(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidDestination({"name": "must be a string"})
    name = unicodedata.normalize("NFC", value.strip())
    if not 1 <= len(name) <= 255:
        raise InvalidDestination({"name": "must be 1 to 255 characters"})
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise InvalidDestination({"name": "must not contain control characters"})
    return name


def _blank_is_none(value: object) -> object:
    """A form field left empty means "not set"."""
    return None if isinstance(value, str) and not value.strip() else value


def _file_name_template(value: object) -> object:
    if isinstance(value, str):
        try:
            _compile_name(value)
        except InvalidTemplate as exc:
            raise exc.for_field("file_name_template") from None
    return value


_FLAG_SCHEMA: dict[str, Any] = {
    "type": ["boolean", "string"],
    "enum": [True, False, "true", "false", "1", "0"],
}

Flag = Annotated[bool, BeforeValidator(_flag)]


class CommonFields(BaseModel):
    """The fields every destination has, whatever its type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[
        str,
        BeforeValidator(_name),
        Field(
            min_length=1,
            max_length=255,
            description="The destination's name (1-255 "
            "characters, no control characters; surrounding spaces are removed).",
        ),
    ]
    enabled: Annotated[
        Flag,
        WithJsonSchema(
            {
                **_FLAG_SCHEMA,
                "description": "Disabled destinations receive no "
                "uploads. Saving a destination enabled first verifies it (a probe "
                "object put and deleted).",
            }
        ),
    ]
    manifest: Annotated[
        Flag,
        WithJsonSchema(
            {
                **_FLAG_SCHEMA,
                "default": False,
                "description": "Write "
                "manifest-<result_set_id>.json (each file's key, size, sha256) after "
                "every file of a result set arrived.",
            }
        ),
    ] = False
    probe_delete_failure: Annotated[
        Literal["fail", "warn"],
        Field(
            description="Whether a failed delete of the verification probe fails the "
            "verification ('fail') or only warns ('warn': for write-only or "
            "retention-locked buckets)."
        ),
    ] = "fail"
    compression: Annotated[
        Literal["none", "gzip", "zstd"],
        Field(
            description="Compress every object written: 'gzip' appends .gz to the key, "
            "'zstd' .zst. The object keeps the original Content-Type and gets no "
            "Content-Encoding, so HTTP clients do not decompress it silently."
        ),
    ] = "none"
    max_file_records: Annotated[
        Annotated[int, Field(ge=1, le=1_000_000_000)] | None,
        BeforeValidator(_blank_is_none),
        Field(
            description="Split JSON Lines and CSV files into parts of at most this many "
            "records (CSV parts repeat the header). Other files are not split.",
        ),
    ] = None
    max_file_bytes: Annotated[
        Annotated[int, Field(ge=1, le=5 * 1024**4)] | None,
        BeforeValidator(_blank_is_none),
        Field(
            description="Split JSON Lines and CSV files into parts of at most this many "
            "bytes before compression, at record boundaries (a larger record is a part of "
            "its own, never cut).",
        ),
    ] = None
    file_name_template: Annotated[
        str,
        BeforeValidator(_file_name_template),
        Field(
            max_length=1024,
            description="The object name under the prefix: the prefix tokens plus "
            "%FILE_NAME% (the name without its last extension), %FILE_EXT% (the extension "
            "with its dot) and %PART% (the part number, 5 digits). Split files without "
            "%PART% are named %FILE_NAME%-%PART%%FILE_EXT%.",
        ),
    ] = DEFAULT_FILE_NAME_TEMPLATE


#: Messages for a missing required common field.
_MISSING = {"enabled": "required (true or false)"}

#: Fields every destination has, whatever its type (``id`` is assigned by storage).
COMMON_FIELDS: tuple[str, ...] = ("id", "type", *CommonFields.model_fields)

_lock = threading.Lock()
_models: dict[str, type[CommonFields]] = {}
_union: tuple[tuple[str, ...], TypeAdapter[Any], int] | None = None


def destination_model(type_name: str) -> type[CommonFields]:
    """The full model of one type: :class:`CommonFields` + the plugin's fields + ``type``."""
    with _lock:
        model = _models.get(type_name)
        if model is None:
            model = _models[type_name] = _build_model(get_type(type_name))
        return model


def _build_model(dtype: DestinationType) -> type[CommonFields]:
    validators: dict[str, Any] = {}
    if dtype.prefix_field is not None:
        prefix_field = dtype.prefix_field

        def _template(value: object) -> object:
            if isinstance(value, str):
                try:
                    _compile(value)
                except InvalidTemplate as exc:
                    raise exc.for_field(prefix_field) from None
            return value

        validators["check_template"] = field_validator(prefix_field)(_template)
    for endpoint_field in dtype.endpoint_fields:

        def _endpoint(value: object, info: ValidationInfo) -> object:
            if isinstance(value, str) and value and info.field_name:
                check_endpoint_scheme(info.field_name, value)
            return value

        validators[f"check_{endpoint_field}"] = field_validator(endpoint_field)(_endpoint)
    discriminator: Any = Literal[dtype.name]  # a Literal of a value known only at run time
    bases: Any = (CommonFields, dtype.fields)
    model: type[CommonFields] = create_model(
        f"{dtype.name.capitalize()}Destination",
        __base__=bases,
        __doc__=dtype.description or f"A {dtype.name} destination.",
        __validators__=validators,
        type=(discriminator, Field(description="The destination type.")),
    )
    return model


def destination_union() -> TypeAdapter[Any]:
    """The discriminated union (on ``type``) of every installed type's full model.

    A type whose plugin fails to import is left out (and logged); asking for it by name
    raises its :class:`~destinations.PluginLoadError`.
    """
    return _current_union()[1]


def _current_union() -> tuple[tuple[str, ...], TypeAdapter[Any], int]:
    """(the type names, the adapter, how many location parts its errors start with)."""
    global _union
    names = tuple(available_types())
    current = _union
    if current is not None and current[0] == names:
        return current
    models = []
    for name in names:
        try:
            models.append(destination_model(name))
        except PluginLoadError as exc:
            log.error("%s", exc)
    if not models:
        raise UnknownType("", [])
    choice: Any = models[0] if len(models) == 1 else Union[tuple(models)]  # noqa: UP007
    if len(models) > 1:
        choice = Annotated[choice, Field(discriminator="type")]
    adapter: TypeAdapter[Any] = TypeAdapter(choice)
    _union = (names, adapter, 1 if len(models) > 1 else 0)
    return _union


@functools.lru_cache(maxsize=1024)
def _compile(text: str) -> PathTemplate:
    """Templates are immutable: each distinct text is compiled once."""
    return PathTemplate(text)


@functools.lru_cache(maxsize=256)
def _compile_name(text: str) -> FileNameTemplate:
    return FileNameTemplate(text)


def _type_of_field(key: str, types: list[str]) -> str | None:
    for name in sorted(types, key=len, reverse=True):
        if key.startswith(name + "_"):
            return name
    return None


def parse_destination(params: Mapping[str, object]) -> Destination:
    """Validate seed-style parameters (``name``, ``enabled``, ``type``, ``s3_bucket_name``…).

    Raises :class:`~destinations.InvalidDestination` whose ``errors`` maps every bad field to
    what is wrong with it (all problems at once, not just the first). Unknown fields and
    fields of another type are errors. Imports the installed plugins on first use.
    """
    errors: dict[str, str] = {}
    data: dict[str, object] = {}
    for key, value in params.items():
        if isinstance(key, str):
            data[key] = value
        else:
            errors[repr(key)] = "field names must be strings"

    dest_id = data.pop("id", None)
    if dest_id is not None and not isinstance(dest_id, str):
        dest_id = str(dest_id)

    dtype: DestinationType | None = None
    type_name = data.pop("type", None)
    if type_name is None or type_name == "":
        errors["type"] = f"required; installed types: {', '.join(available_types())}"
    elif not isinstance(type_name, str):
        errors["type"] = "must be a string"
    else:
        type_name = type_name.strip().lower()
        try:
            dtype = get_type(type_name)
        except UnknownType as exc:
            errors.update(exc.errors)

    if dtype is None:
        # Still check the common fields, so every problem is reported at once.
        common = {k: v for k, v in data.items() if k in CommonFields.model_fields}
        try:
            CommonFields.model_validate(common)
        except ValidationError as exc:
            errors.update(_field_errors(exc, offset=0))
        raise InvalidDestination(errors)

    allowed = destination_model(dtype.name).model_fields
    types = available_types()
    for key in [k for k in data if k not in allowed]:
        owner = _type_of_field(key, types)
        if owner is not None and owner != dtype.name:
            errors[key] = f"is a field of type {owner!r}, not of type {dtype.name!r}"
        else:
            errors[key] = f"unknown field for type {dtype.name!r}"
        del data[key]
    data["type"] = dtype.name
    template_error: InvalidTemplate | None = None
    # The union's member for this type, picked by the discriminator's value: the same
    # validation as the whole union, and only this type's plugin is imported.
    try:
        validated = destination_model(dtype.name).model_validate(data)
    except ValidationError as exc:
        template_error = _template_error(exc)
        errors.update(_field_errors(exc, offset=0))
        if template_error is not None and len(errors) == 1:
            raise template_error from None  # keeps .position for the caller
        raise InvalidDestination(errors) from None
    if errors:
        raise InvalidDestination(errors)

    plugin_fields = dtype.fields.model_fields
    settings = dtype.fields.model_construct(
        _fields_set={k for k in validated.model_fields_set if k in plugin_fields},
        **{k: getattr(validated, k) for k in plugin_fields},
    )
    prefix = getattr(settings, dtype.prefix_field) if dtype.prefix_field else ""
    return Destination(
        id=dest_id,
        name=validated.name,
        type=dtype.name,
        enabled=validated.enabled,
        manifest=validated.manifest,
        probe_delete_failure=validated.probe_delete_failure,
        compression=validated.compression,
        max_file_records=validated.max_file_records,
        max_file_bytes=validated.max_file_bytes,
        file_name_template=validated.file_name_template,
        settings=settings,
        template=_compile(prefix if isinstance(prefix, str) else ""),
        name_template=_compile_name(validated.file_name_template),
        type_info=dtype,
    )


def update_destination(destination: Destination, changes: Mapping[str, object]) -> Destination:
    """``destination`` with ``changes`` applied, validated again (see
    :meth:`Destination.updated`)."""
    base = destination.to_params(reveal_secrets=True)
    if "type" in changes and str(changes["type"]).strip().lower() != destination.type:
        base = {k: v for k, v in base.items() if k in COMMON_FIELDS}
    return parse_destination({**base, **changes})


_records._update = update_destination


def _template_error(exc: ValidationError) -> InvalidTemplate | None:
    for err in exc.errors(include_input=False, include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, InvalidTemplate):
            return cause
    return None


def _field_errors(exc: ValidationError, *, offset: int) -> dict[str, str]:
    """Pydantic errors as {field: message}, never echoing the input (it may be a secret).

    ``offset`` skips the union's tag in each error's location.
    """
    out: dict[str, str] = {}
    for err in exc.errors(include_input=False, include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, InvalidDestination):
            out.update(cause.errors)
            continue
        loc = err["loc"][offset:]
        key = str(loc[0]) if loc else "type"
        msg = err["msg"]
        if err["type"] == "missing":
            msg = _MISSING.get(key, "required")
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "literal_error" and key == "probe_delete_failure":
            msg = "must be 'fail' or 'warn'"
        out.setdefault(key, msg)
    return out
