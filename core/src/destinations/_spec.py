"""The destination spec: flat seed-style parameters in, a validated :class:`Destination` out."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, SecretStr, ValidationError

from ._errors import InvalidDestination, InvalidTemplate, UnknownType
from ._guard import check_endpoint_scheme
from ._plugins import available_types, get_type
from ._template import PathTemplate
from .plugin import DestinationType

__all__ = ["COMMON_FIELDS", "Destination", "parse_bool", "parse_destination"]

#: Fields every destination has, whatever its type.
COMMON_FIELDS = ("id", "name", "enabled", "type", "manifest", "probe_delete_failure")

ProbeDeleteFailure = Literal["fail", "warn"]
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


@dataclass(frozen=True, slots=True)
class Destination:
    """A validated destination: common fields plus the type's own ``settings`` model.

    Build one with :func:`parse_destination`. Secrets inside ``settings`` are ``SecretStr``,
    so the repr never shows them.
    """

    name: str
    type: str
    enabled: bool
    settings: BaseModel
    id: str | None = None
    manifest: bool = False
    probe_delete_failure: ProbeDeleteFailure = "fail"
    template: PathTemplate = field(default_factory=lambda: PathTemplate(""), compare=False)

    @property
    def destination_type(self) -> DestinationType:
        return get_type(self.type)

    def to_params(self, *, reveal_secrets: bool = False) -> dict[str, Any]:
        """The flat parameters this destination was parsed from.

        Secrets stay ``SecretStr`` unless ``reveal_secrets`` (for storage and SDK calls only).
        Round-trips: ``parse_destination(d.to_params(reveal_secrets=True)) == d``.
        """
        params: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "enabled": self.enabled,
            "manifest": self.manifest,
            "probe_delete_failure": self.probe_delete_failure,
        }
        if self.id is not None:
            params["id"] = self.id
        for key, value in self.settings:
            if reveal_secrets and isinstance(value, SecretStr):
                value = value.get_secret_value()
            params[key] = value
        return params

    def updated(self, changes: Mapping[str, object]) -> Destination:
        """A new destination with ``changes`` applied (a partial update).

        Changing the type drops the old type's fields, so only the new type's apply.
        """
        base = self.to_params(reveal_secrets=True)
        if "type" in changes and str(changes["type"]).strip().lower() != self.type:
            base = {k: v for k, v in base.items() if k in COMMON_FIELDS}
        return parse_destination({**base, **changes})


def _type_of_field(key: str, types: list[str]) -> str | None:
    for name in sorted(types, key=len, reverse=True):
        if key.startswith(name + "_"):
            return name
    return None


def parse_destination(params: Mapping[str, object]) -> Destination:
    """Validate seed-style parameters (``name``, ``enabled``, ``type``, ``s3_bucket_name``…).

    Raises :class:`~destinations.InvalidDestination` whose ``errors`` maps every bad field to
    what is wrong with it (all problems at once, not just the first). Unknown fields and
    fields of another type are errors. Imports the type's plugin on first use.
    """
    errors: dict[str, str] = {}
    data = dict(params)
    for key in list(data):
        if not isinstance(key, str):
            errors[repr(key)] = "field names must be strings"
            del data[key]

    dest_id = data.pop("id", None)
    if dest_id is not None and not isinstance(dest_id, str):
        dest_id = str(dest_id)

    name = data.pop("name", None)
    if name is None:
        errors["name"] = "required"
    elif not isinstance(name, str):
        errors["name"] = "must be a string"
    else:
        name = unicodedata.normalize("NFC", name.strip())
        if not 1 <= len(name) <= 255:
            errors["name"] = "must be 1 to 255 characters"
        elif any(unicodedata.category(c) == "Cc" for c in name):
            errors["name"] = "must not contain control characters"

    flags: dict[str, bool] = {}
    for key, default in (("enabled", None), ("manifest", False)):
        raw = data.pop(key, default)
        if raw is None:
            errors[key] = "required (true or false)"
            continue
        try:
            flags[key] = parse_bool(raw)
        except ValueError as exc:
            errors[key] = str(exc)

    probe_delete = data.pop("probe_delete_failure", "fail")
    if probe_delete not in ("fail", "warn"):
        errors["probe_delete_failure"] = "must be 'fail' or 'warn'"

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

    settings: BaseModel | None = None
    template = PathTemplate("")
    template_error: InvalidTemplate | None = None
    if dtype is not None:
        model_fields = dtype.fields.model_fields
        types = available_types()
        for key in [k for k in data if k not in model_fields]:
            owner = _type_of_field(key, types)
            if owner is not None and owner != dtype.name:
                errors[key] = f"is a field of type {owner!r}, not of type {dtype.name!r}"
            else:
                errors[key] = f"unknown field for type {dtype.name!r}"
            del data[key]
        try:
            settings = dtype.fields.model_validate(data)
        except ValidationError as exc:
            errors.update(_field_errors(exc))
        else:
            for endpoint_field in dtype.endpoint_fields:
                url = getattr(settings, endpoint_field)
                if isinstance(url, str) and url:
                    try:
                        check_endpoint_scheme(endpoint_field, url)
                    except InvalidDestination as exc:
                        errors.update(exc.errors)
        if dtype.prefix_field is not None:
            # Compiled from the raw value too, so a template error is reported alongside
            # the other fields' errors.
            raw = data.get(dtype.prefix_field) if settings is None else None
            text = getattr(settings, dtype.prefix_field) if settings is not None else raw
            if not isinstance(text, str):
                text = ""
            try:
                template = PathTemplate(text)
            except InvalidTemplate as exc:
                template_error = exc.for_field(dtype.prefix_field)
                errors.update(template_error.errors)

    if template_error is not None and len(errors) == 1:
        raise template_error  # keeps .position for the caller
    if errors or settings is None or dtype is None:
        raise InvalidDestination(errors)
    assert isinstance(name, str)
    return Destination(
        id=dest_id,
        name=name,
        type=dtype.name,
        enabled=flags["enabled"],
        manifest=flags["manifest"],
        probe_delete_failure=probe_delete,  # type: ignore[arg-type]
        settings=settings,
        template=template,
    )


def _field_errors(exc: ValidationError) -> dict[str, str]:
    """Pydantic errors as {field: message}, never echoing the input (it may be a secret)."""
    out: dict[str, str] = {}
    for err in exc.errors(include_input=False, include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, InvalidDestination):
            out.update(cause.errors)
            continue
        loc = err["loc"]
        key = str(loc[0]) if loc else "type"
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "required"
        out.setdefault(key, msg)
    return out
