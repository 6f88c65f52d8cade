"""The plugin host: lazy entry points, clear errors, no double registration."""

import subprocess
import sys
import textwrap

import pytest

import destinations
from destinations import PluginLoadError
from destinations._plugins import PluginHost
from destinations.plugin import DestinationType


def run_python(code: str, **env: str) -> str:
    import os

    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return result.stdout.strip()


def test_available_types_imports_no_plugin_and_no_sdk():
    out = run_python("""
        import sys
        import destinations
        types = destinations.available_types()
        assert types == sorted(types) and "local" in types, types
        loaded = [m for m in sys.modules if m.split(".")[0] in
                  ("boto3", "botocore", "google", "azure", "oss2", "destinations_s3",
                   "destinations_gcs", "destinations_azure", "destinations_oss")]
        loaded.append("destinations.local" in sys.modules)
        loaded.append("pydantic" in sys.modules)
        print(loaded)
    """)
    assert out == "[False, False]"


def test_plugin_module_imported_on_first_use_once():
    out = run_python("""
        import sys, destinations
        before = "destinations.local" in sys.modules
        a = destinations.get_type("local"); b = destinations.get_type("local")
        print(before, "destinations.local" in sys.modules, a is b)
    """)
    assert out == "False True True"


def test_disable_env_hides_a_type():
    out = run_python(
        "import destinations; print(destinations.available_types())",
        DESTINATIONS_DISABLE_PLUGINS="local",
    )
    assert "'local'" not in out


class _EP:
    """An entry point whose load fails, as a broken install's would."""

    name = "broken"
    value = "destinations_broken"

    class dist:
        name = "destinations-broken"

    def load(self):
        raise ModuleNotFoundError("No module named 'broken_sdk'")


def test_plugin_import_failure_names_the_distribution():
    host = PluginHost()
    host._entry_points = {"broken": _EP()}  # what importlib.metadata would have returned
    with pytest.raises(PluginLoadError) as info:
        host.get("broken")
    assert "pip install destinations-broken" in str(info.value)
    assert "broken_sdk" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_registering_a_type_name_twice_raises():
    host = PluginHost()
    dtype = destinations.get_type("local")

    class A:
        @destinations.hookimpl
        def destinations_register_types(self, register):
            register(dtype)

    class B:
        @destinations.hookimpl
        def destinations_register_types(self, register):
            register(
                DestinationType(name="local", fields=dtype.fields, open_store=dtype.open_store)
            )

    host.register_plugin(A())
    with pytest.raises(ValueError, match="already registered"):
        host.register_plugin(B())


def test_unknown_hook_implementation_is_rejected():
    host = PluginHost()

    class Typo:
        @destinations.hookimpl
        def destinations_register_typez(self, register):
            pass

    with pytest.raises(Exception, match="unknown hook"):
        host.register_plugin(Typo())


def test_type_definition_checks_its_field_names():
    dtype = destinations.get_type("local")
    with pytest.raises(ValueError, match="not a field"):
        DestinationType(
            name="x", fields=dtype.fields, open_store=dtype.open_store, prefix_field="x_path_prefix"
        )
    with pytest.raises(ValueError, match="lower-case identifier"):
        DestinationType(name="Bad-Name", fields=dtype.fields, open_store=dtype.open_store)


def test_secret_fields_are_detected(scripted):
    assert destinations.get_type("scripted").secret_fields == {"scripted_token"}
    assert destinations.get_type("local").secret_fields == frozenset()
