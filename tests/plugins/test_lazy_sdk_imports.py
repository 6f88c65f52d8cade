"""Listing types and validating destinations import no cloud SDK; opening a store does.

Each check runs in a fresh interpreter, so modules imported by other tests do not count.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.emulators.gcs_auth import new_key, service_account_json

SDK_MODULES = (
    "boto3",
    "botocore",
    "obstore",
    "azure.storage",
    "azure.core",
    "oss2",
    "google.cloud",
    "google.auth",
)

# Shared by every subprocess: which SDK modules are loaded.
_PRELUDE = f"""
import json, sys
SDK_MODULES = {SDK_MODULES!r}

def loaded_sdks():
    return sorted(
        m for m in sys.modules if any(m == s or m.startswith(s + ".") for s in SDK_MODULES)
    )
"""


def _service_account_json() -> str:
    return service_account_json(new_key(), "https://oauth2.googleapis.com/token")


def _valid_params() -> dict[str, dict[str, object]]:
    base: dict[str, object] = {"name": "lazy", "enabled": True}
    return {
        "s3": {
            **base,
            "type": "s3",
            "s3_bucket_name": "lazy-bucket",
            "s3_access_key_id": "AKIAEXAMPLEKEY0001",
            "s3_secret_access_key": "s3cr3t/Example+Secret",
        },
        "s3compatible": {
            **base,
            "type": "s3compatible",
            "s3_bucket_name": "lazy-bucket",
            "s3_access_key_id": "AKIAEXAMPLEKEY0001",
            "s3_secret_access_key": "s3cr3t/Example+Secret",
            "s3_endpoint": "https://s3.example.com",
            "s3_region": "us-east-1",
        },
        "gcs_hmac": {
            **base,
            "type": "gcs",
            "gcs_bucket_name": "lazy-bucket",
            "gcs_access_key": "GOOG1EEXAMPLEKEY0001",
            "gcs_secret_key": "gcsS3cretExampleValue0001",
        },
        "gcs_service_account": {
            **base,
            "type": "gcs",
            "gcs_bucket_name": "lazy-bucket",
            "gcs_service_account_json": _service_account_json(),
        },
        "azure": {
            **base,
            "type": "azure",
            "azure_account_name": "lazyaccount",
            "azure_account_key": base64.b64encode(b"not-a-real-key" * 4).decode(),
            "azure_container_name": "lazy-container",
        },
        "oss": {
            **base,
            "type": "oss",
            "oss_access_key": "LTAI5tExampleKey0001",
            "oss_secret_key": "ossS3cretExampleValue0001",
            "oss_bucket_name": "lazy-bucket",
            "oss_region_id": "oss-cn-hangzhou",
        },
    }


def _run(body: str, *args: str, env: dict[str, str] | None = None) -> object:
    code = _PRELUDE + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_get_type_of_every_type_imports_no_sdk() -> None:
    out = _run(
        """
        import destinations
        types = destinations.available_types()
        for name in types:
            destinations.get_type(name)
        print(json.dumps({"types": types, "loaded": loaded_sdks()}))
        """
    )
    assert isinstance(out, dict)
    assert {"s3", "s3compatible", "gcs", "azure", "oss"} <= set(out["types"])
    assert out["loaded"] == []


def test_parse_destination_imports_no_sdk() -> None:
    out = _run(
        """
        import destinations
        loaded = {}
        for case, params in json.loads(sys.argv[1]).items():
            destinations.parse_destination(params)
            loaded[case] = loaded_sdks()
        print(json.dumps(loaded))
        """,
        json.dumps(_valid_params()),
    )
    assert out == {case: [] for case in _valid_params()}


def test_types_command_imports_no_sdk() -> None:
    out = _run(
        """
        import contextlib, io
        from destinations.cli import main
        listing = io.StringIO()
        with contextlib.redirect_stdout(listing):
            main.main(["types"], standalone_mode=False)
        print(json.dumps({"listing": listing.getvalue(), "loaded": loaded_sdks()}))
        """
    )
    assert isinstance(out, dict)
    for name in ("s3", "s3compatible", "gcs", "azure", "oss"):
        assert name in out["listing"]
    assert out["loaded"] == []


@pytest.mark.parametrize(
    ("case", "sdk", "engine"),
    [
        ("s3", "boto3", None),
        ("s3compatible", "botocore", "boto3"),
        ("s3compatible", "obstore", "native"),
        ("gcs_hmac", "boto3", None),
        ("gcs_service_account", "google.auth", None),
        ("azure", "azure.storage", None),
        ("oss", "oss2", None),
    ],
)
def test_opening_a_store_imports_its_sdk(case: str, sdk: str, engine: str | None) -> None:
    out = _run(
        """
        import destinations
        dest = destinations.parse_destination(json.loads(sys.argv[1]))
        before = loaded_sdks()
        destinations.open_store(dest).close()
        print(json.dumps({"before": before, "after": loaded_sdks()}))
        """,
        json.dumps(_valid_params()[case]),
        env=None if engine is None else {"DESTINATIONS_S3_ENGINE": engine},
    )
    assert isinstance(out, dict)
    assert out["before"] == []
    assert sdk in out["after"]


def test_public_names_still_importable() -> None:
    out = _run(
        """
        from destinations_s3 import (
            AddressingStyle, ChecksumMode, Labels, S3CompatibleFields, S3Fields,
            S3ProtocolStore, open_s3, open_s3compatible,
        )
        from destinations_azure import AzureFields, AzureStore, map_error as azure_map_error
        from destinations_oss import (
            REGIONS, OssFields, OssStore, default_endpoint, map_error, signing_region,
        )
        import destinations_azure, destinations_oss, destinations_s3
        for module in (destinations_azure, destinations_oss, destinations_s3):
            for name in module.__all__:
                getattr(module, name)
        print(json.dumps(loaded_sdks()))
        """
    )
    assert isinstance(out, list)
    assert {"boto3", "azure.storage", "oss2"} <= set(out)
