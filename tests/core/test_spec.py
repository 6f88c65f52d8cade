"""parse_destination: the seed's flat fields in, a validated Destination out."""

import pytest

from destinations import InvalidDestination, InvalidTemplate, parse_destination


def local(tmp_path, **extra):
    return {
        "name": "mine",
        "enabled": "true",
        "type": "local",
        "local_directory": str(tmp_path),
        **extra,
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("TRUE", True),
        (" False ", False),
        (1, True),
        (0, False),
    ],
)
def test_enabled_accepts_bools_and_strings(tmp_path, raw, expected):
    assert parse_destination(local(tmp_path, enabled=raw)).enabled is expected


@pytest.mark.parametrize("raw", ["yes", "", "2", 2, None, [], "on"])
def test_enabled_rejects_everything_else(tmp_path, raw):
    with pytest.raises(InvalidDestination) as info:
        parse_destination(local(tmp_path, enabled=raw))
    assert set(info.value.errors) == {"enabled"}


def test_every_problem_is_reported_at_once_by_field(tmp_path):
    with pytest.raises(InvalidDestination) as info:
        parse_destination(
            {
                "name": "",
                "enabled": "maybe",
                "type": "local",
                "local_directory": str(tmp_path / "missing"),
                "bogus": "1",
            }
        )
    errors = info.value.errors
    assert set(errors) == {"name", "enabled", "local_directory", "bogus"}
    assert "1 to 255" in errors["name"]
    assert "not an existing directory" in errors["local_directory"]
    assert "unknown field" in errors["bogus"]
    assert isinstance(info.value, ValueError)


def test_missing_required_fields(tmp_path):
    with pytest.raises(InvalidDestination) as info:
        parse_destination({"type": "local"})
    assert set(info.value.errors) == {"name", "enabled", "local_directory"}
    assert info.value.errors["local_directory"] == "required"


def test_unknown_type_lists_installed_types():
    with pytest.raises(InvalidDestination) as info:
        parse_destination({"name": "n", "enabled": True, "type": "ftp"})
    assert "local" in info.value.errors["type"]
    assert "ftp" in info.value.errors["type"]


def test_type_is_case_insensitive(tmp_path):
    assert parse_destination(local(tmp_path, type="LOCAL")).type == "local"


def test_name_length_limit(tmp_path):
    assert parse_destination(local(tmp_path, name="n" * 255)).name == "n" * 255
    with pytest.raises(InvalidDestination) as info:
        parse_destination(local(tmp_path, name="n" * 256))
    assert set(info.value.errors) == {"name"}


def test_field_of_another_type_is_named(tmp_path, scripted):
    with pytest.raises(InvalidDestination) as info:
        parse_destination(local(tmp_path, scripted_token="x"))
    assert info.value.errors == {
        "scripted_token": "is a field of type 'scripted', not of type 'local'"
    }


def test_bad_template_points_at_field_and_position(tmp_path):
    with pytest.raises(InvalidTemplate) as info:
        parse_destination(local(tmp_path, local_path_prefix="out/%COLLECTON%"))
    assert info.value.position == 4
    assert "local_path_prefix" in info.value.errors
    assert "%COLLECTION_ID%" in info.value.errors["local_path_prefix"]


def test_template_compiled_at_parse(tmp_path):
    d = parse_destination(local(tmp_path, local_path_prefix="/a//%date%/"))
    assert d.template.normalized == "a/%DATE%"


def test_secret_never_in_repr_errors_or_params(scripted):
    secret = "s3cr3t-VALUE-xyz"
    d = parse_destination(
        {"name": "n", "enabled": True, "type": "scripted", "scripted_token": secret}
    )
    assert secret not in repr(d) and secret not in str(d)
    assert secret not in repr(d.to_params())
    assert d.to_params(reveal_secrets=True)["scripted_token"] == secret
    with pytest.raises(InvalidDestination) as info:
        parse_destination(
            {
                "name": "n",
                "enabled": True,
                "type": "scripted",
                "scripted_token": secret,
                "scripted_delay": secret,
            }
        )
    assert secret not in str(info.value) and secret not in repr(info.value.errors)
    with pytest.raises(InvalidDestination) as info:  # wrong type for the secret itself
        parse_destination(
            {"name": "n", "enabled": True, "type": "scripted", "scripted_token": [secret]}
        )
    assert secret not in str(info.value)


def test_round_trip_and_partial_update(tmp_path, scripted):
    d = parse_destination(local(tmp_path, local_path_prefix="x/%DATE%", manifest="1"))
    assert parse_destination(d.to_params(reveal_secrets=True)) == d
    renamed = d.updated({"name": "other"})
    assert renamed.name == "other" and renamed.settings == d.settings and renamed.manifest
    switched = d.updated({"type": "scripted", "scripted_token": "t"})
    assert switched.type == "scripted" and switched.name == "mine"
    with pytest.raises(InvalidDestination):
        d.updated({"local_directory": str(tmp_path / "nope")})


def test_probe_delete_failure_option(tmp_path):
    assert parse_destination(local(tmp_path)).probe_delete_failure == "fail"
    assert (
        parse_destination(local(tmp_path, probe_delete_failure="warn")).probe_delete_failure
        == "warn"
    )
    with pytest.raises(InvalidDestination) as info:
        parse_destination(local(tmp_path, probe_delete_failure="ignore"))
    assert set(info.value.errors) == {"probe_delete_failure"}
