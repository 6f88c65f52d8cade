"""The models are the documentation: every field described, literals as enums, every type in
the OpenAPI discriminator, bounds documented; `types --json` shows the same descriptions."""

from __future__ import annotations

import json
import typing

import pytest
from click.testing import CliRunner

import destinations
from destinations.api._openapi import build_openapi
from destinations.cli import main

TYPES = destinations.available_types()


@pytest.fixture(scope="module")
def openapi() -> dict[str, typing.Any]:
    return build_openapi(TYPES)


def test_every_installed_type_is_in_the_discriminator_mapping(openapi: dict) -> None:
    schemas = openapi["components"]["schemas"]
    for union in ("DestinationParams", "Destination"):
        mapping = schemas[union]["discriminator"]["mapping"]
        assert sorted(mapping) == TYPES
        for ref in mapping.values():
            assert ref.rsplit("/", 1)[-1] in schemas
        assert [o["$ref"] for o in schemas[union]["oneOf"]] == [mapping[t] for t in TYPES]
    assert "local" in schemas["DestinationParams"]["discriminator"]["mapping"]


@pytest.mark.parametrize("type_name", TYPES)
def test_every_field_is_described_and_literals_are_enums(openapi: dict, type_name: str) -> None:
    key = type_name.capitalize()
    write = openapi["components"]["schemas"][f"{key}DestinationParams"]
    assert write["additionalProperties"] is False
    for name, prop in write["properties"].items():
        assert prop.get("description"), f"{type_name}.{name} has no description"
    model = destinations.get_type(type_name).fields
    for name, info in model.model_fields.items():
        args = typing.get_args(info.annotation) or (info.annotation,)
        literal = [a for a in args if typing.get_origin(a) is typing.Literal]
        if literal:
            enum = write["properties"][name].get("enum") or [
                v for alt in write["properties"][name].get("anyOf", []) for v in alt.get("enum", [])
            ]
            assert enum, f"{type_name}.{name} is a Literal but not an enum in OpenAPI"
    assert write["properties"]["probe_delete_failure"]["enum"] == ["fail", "warn"]
    assert write["properties"]["name"]["maxLength"] == 255
    read = openapi["components"]["schemas"][f"{key}Destination"]
    for secret in destinations.get_type(type_name).secret_fields:
        assert secret not in read["properties"]
        assert write["properties"][secret]["writeOnly"] is True


def test_oss_region_is_an_enum(openapi: dict) -> None:
    region = openapi["components"]["schemas"]["OssDestinationParams"]["properties"]["oss_region_id"]
    assert "oss-cn-hangzhou" in region["enum"]


def test_page_bounds_are_documented(openapi: dict) -> None:
    params = openapi["paths"]["/destinations"]["get"]["parameters"]
    page = next(p for p in params if p["name"] == "page")
    assert page["schema"]["minimum"] == 1 and page["schema"]["maximum"] >= 1


def test_types_json_shows_the_models_descriptions() -> None:
    result = CliRunner().invoke(main, ["types", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    # every installed type (test suites may have registered their own since collection)
    assert sorted(t["type"] for t in data) == destinations.available_types()
    for entry in data:
        if entry["type"] not in TYPES:
            continue  # a test suite's own plugin, registered after collection
        for field in entry["fields"]:
            assert field["description"], f"{entry['type']}.{field['name']} has no description"
    oss = next(t for t in data if t["type"] == "oss")
    region = next(f for f in oss["fields"] if f["name"] == "oss_region_id")
    assert "oss-cn-hangzhou" in region["enum"]


def test_parse_validates_as_the_discriminated_union_does(tmp_path: typing.Any) -> None:
    from pydantic import ValidationError

    from destinations._spec import destination_union

    union = destination_union()
    good = {"name": " n ", "enabled": "1", "type": "local", "local_directory": str(tmp_path)}
    picked = union.validate_python(good)
    parsed = destinations.parse_destination(good)
    assert type(picked).__name__ == "LocalDestination"
    assert (picked.name, picked.enabled, picked.local_directory) == (
        parsed.name,
        parsed.enabled,
        parsed.settings.local_directory,  # type: ignore[attr-defined]
    )
    bad = {**good, "enabled": "maybe", "name": ""}
    with pytest.raises(ValidationError) as union_error:
        union.validate_python(bad)
    with pytest.raises(destinations.InvalidDestination) as parse_error:
        destinations.parse_destination(bad)
    union_fields = {e["loc"][1] for e in union_error.value.errors()}
    assert union_fields == set(parse_error.value.errors) == {"name", "enabled"}
