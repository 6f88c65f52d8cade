"""``/openapi.json``: the contract, with one request schema per installed type, built from
each type's own field model (so a newly installed plugin documents itself)."""

from __future__ import annotations

import copy
import logging
from typing import Any

from .._errors import PluginLoadError
from .._plugins import get_type
from .._spec import CommonFields, destination_model
from ._service import MAX_PAGE, PAGE_SIZE

__all__ = ["build_openapi"]

log = logging.getLogger("destinations.api")

_TIMES = {
    key: {"type": ["string", "null"], "format": "date-time"}
    for key in ("created_at", "updated_at", "last_verified_at")
}


def _envelope(**extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["request_info"],
        "properties": {
            "request_info": {"$ref": "#/components/schemas/RequestInfo"},
            **extra,
        },
    }


def _type_schemas(
    type_name: str, components: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The write schema (all fields) and the read schema (no secrets) of one type, both from
    the type's full model (:func:`destinations._spec.destination_model`): the common fields'
    rules, bounds, enums and descriptions are the model's own."""
    dtype = get_type(type_name)
    model = destination_model(type_name)
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    props: dict[str, Any] = schema.get("properties", {})
    for name in dtype.masked_fields:
        props[name]["description"] = (
            props[name].get("description", "") + " Shown only by its last four characters."
        ).strip()
    for name in dtype.secret_fields:
        props[name].update(writeOnly=True, format="password")
    common = [n for n in CommonFields.model_fields]
    ordered = {
        "type": props["type"],
        **{n: props[n] for n in common},
        **{n: v for n, v in props.items() if n != "type" and n not in common},
    }
    write = {
        "type": "object",
        "title": f"{type_name} destination",
        "description": dtype.description,
        "additionalProperties": False,
        "required": schema.get("required", []),
        "properties": ordered,
    }
    read_props = copy.deepcopy({k: v for k, v in ordered.items() if k not in dtype.secret_fields})
    for flag in ("enabled", "manifest"):
        read_props[flag] = {"type": "boolean", "description": read_props[flag]["description"]}
    read = {
        "type": "object",
        "title": f"{type_name} destination (as returned)",
        "properties": {"id": {"type": "string"}, **read_props, **_TIMES},
    }
    return write, read


def build_openapi(types: list[str]) -> dict[str, Any]:
    components: dict[str, Any] = {
        "RequestInfo": {
            "type": "object",
            "required": ["success"],
            "properties": {
                "success": {"type": "boolean"},
                "message": {"type": "string"},
                "errors": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Each invalid field and what is wrong with it (at most 20).",
                },
                "more_errors": {
                    "type": "integer",
                    "description": "How many more invalid fields there were than listed.",
                },
                "connectivity_problem": {"type": "boolean"},
                "step": {"type": "string", "enum": ["put", "delete"]},
                "code": {"type": "string"},
                "provider_code": {"type": "string"},
            },
        },
        "Error": _envelope(),
    }
    writes, reads = [], []
    write_map, read_map = {}, {}
    for name in types:
        try:
            write, read = _type_schemas(name, components)
        except PluginLoadError as exc:
            log.error("%s", exc)
            continue
        key = name.capitalize()
        components[f"{key}DestinationParams"] = write
        components[f"{key}Destination"] = read
        write_map[name] = f"#/components/schemas/{key}DestinationParams"
        read_map[name] = f"#/components/schemas/{key}Destination"
        writes.append({"$ref": write_map[name]})
        reads.append({"$ref": read_map[name]})
    components["DestinationParams"] = {
        "oneOf": writes,
        "discriminator": {"propertyName": "type", "mapping": write_map},
    }
    components["Destination"] = {
        "oneOf": reads,
        "discriminator": {"propertyName": "type", "mapping": read_map},
    }
    one = _envelope(destination={"$ref": "#/components/schemas/Destination"})

    def body(schema: str, partial: bool = False) -> dict[str, Any]:
        ref: dict[str, Any] = {"$ref": f"#/components/schemas/{schema}"}
        if partial:
            ref = {
                "description": "Only the fields to change; omitted fields keep their values. "
                "A new type needs its required fields.",
                "type": "object",
            }
        return {
            "required": True,
            "content": {
                "application/json": {"schema": ref},
                "application/x-www-form-urlencoded": {"schema": ref},
            },
        }

    def responses(ok: dict[str, Any], *codes: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "200": {"description": "Success", "content": {"application/json": {"schema": ok}}}
        }
        reasons = {
            "400": "Invalid parameters, limit reached, or failed verification "
            "(connectivity_problem)",
            "401": "Supplied api_key is missing or not valid",
            "404": "Not found",
            "408": "The request body did not arrive in time",
            "409": "Changed concurrently, or the Idempotency-Key was used with another body "
            "(or its first request is still running); retry",
            "413": "Body too large",
            "429": "Too many verification attempts, or the account's share of verification "
            "capacity is in use; retry after Retry-After seconds",
        }
        retry_after = {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
        }
        for code in ("401", *codes):
            out[code] = {
                "description": reasons[code],
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            if code == "429":
                out[code]["headers"] = retry_after
        return out

    idempotency_key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 255},
        "description": "Repeating a create with the same key and body within 24 hours returns "
        "the original response (marked Idempotent-Replayed: true) instead of creating again; "
        "the same key with another body is 409.",
    }

    api_key = {"name": "api_key", "in": "query", "required": True, "schema": {"type": "string"}}
    dest_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    listing = _envelope(
        usage={
            "type": "object",
            "properties": {k: {"type": "integer"} for k in ("used", "limit", "available")},
        },
        current_page={"type": "integer"},
        total_pages={"type": "integer"},
        total_results={"type": "integer"},
        destinations={"type": "array", "items": {"$ref": "#/components/schemas/Destination"}},
    )
    deleted = _envelope()
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Destinations API", "version": "1"},
        "paths": {
            "/destinations": {
                "post": {
                    "summary": "Create a destination (verified first when enabled)",
                    "parameters": [api_key, idempotency_key],
                    "requestBody": body("DestinationParams"),
                    "responses": responses(one, "400", "408", "409", "413", "429"),
                },
                "get": {
                    "summary": "List destinations (10 per page)",
                    "parameters": [
                        api_key,
                        *(
                            {"name": n, "in": "query", "required": False, "schema": s}
                            for n, s in (
                                (
                                    "page",
                                    {
                                        "type": "integer",
                                        "minimum": 1,
                                        "maximum": MAX_PAGE,
                                        "default": 1,
                                        "description": f"{PAGE_SIZE} destinations a page.",
                                    },
                                ),
                                ("search_term", {"type": "string"}),
                                ("sort_by", {"type": "string", "enum": ["name", "type"]}),
                                (
                                    "sort_direction",
                                    {"type": "string", "enum": ["ascending", "descending"]},
                                ),
                            )
                        ),
                    ],
                    "responses": responses(listing, "400"),
                },
            },
            "/destinations/{id}": {
                "get": {
                    "summary": "Get one destination",
                    "parameters": [api_key, dest_id],
                    "responses": responses(one, "404"),
                },
                "put": {
                    "summary": "Update a destination (partial)",
                    "parameters": [api_key, dest_id],
                    "requestBody": body("DestinationParams", partial=True),
                    "responses": responses(one, "400", "404", "408", "409", "413", "429"),
                },
                "delete": {
                    "summary": "Delete a destination",
                    "parameters": [api_key, dest_id],
                    "responses": responses(deleted, "404"),
                },
            },
        },
        "components": {"schemas": components},
    }
    # Delivery over HTTP, verification without saving, webhooks (api/_deliveries.py).
    from ._deliveries import delivery_openapi

    paths, schemas = delivery_openapi()
    document["paths"].update(paths)
    components.update(schemas)
    return document
