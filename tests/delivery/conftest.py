"""Destinations of every type against the real local servers, and a result set to send."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oss2  # type: ignore[import-untyped]
import pytest
from azure.storage.blob import ContainerClient

from destinations import Destination, ResultFile, ResultSet, StoreOptions, parse_destination
from destinations.plugin import MiB
from destinations_oss import signing_region
from tests.emulators.fixtures import OSS_BUCKET, OSS_CREDENTIALS, MotoHandle
from tests.emulators.oss_double import OssDouble
from tests.emulators.servers import AZURITE_ACCOUNT_KEY, AZURITE_ACCOUNT_NAME, Azurite

#: Small thresholds so the "big" file goes multipart quickly (5 MiB is S3's minimum part).
OPTIONS = StoreOptions(timeout=5.0, multipart_threshold=5 * MiB, part_size=5 * MiB)
BIG = 6 * MiB + 123
((OSS_KEY, OSS_SECRET),) = OSS_CREDENTIALS.items()
TEMPLATE = "deliveries/%COLLECTION_NAME%/%DATE%/%HOUR%/%RESULT_SET_ID%"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every server here is on 127.0.0.1: the operator switch core's endpoint guard honours.
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Payload:
    """A result set of files on disk, and their bytes to compare against."""

    result_set: ResultSet
    data: dict[str, bytes]


def make_payload(directory: Path, result_set_id: str | None = None) -> Payload:
    rng = random.Random(7)
    data = {
        "orders.json": json.dumps(
            {"orders": [{"id": i, "total": i * 3} for i in range(50)]}
        ).encode(),
        "items.jsonl": b"".join(
            json.dumps({"item": i, "name": f"n\u00e9{i}"}).encode() + b"\n" for i in range(200)
        ),
        "prices.csv": b"sku,price\n" + b"".join(b"%d,%d.99\n" % (i, i) for i in range(300)),
        "big.zip": rng.randbytes(BIG),
    }
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for name, body in data.items():
        path = directory / name
        path.write_bytes(body)
        files.append(ResultFile(name, path))
    rs_id = result_set_id or f"rs-{uuid.uuid4().hex[:8]}"
    return Payload(ResultSet("c-42", "Daily/Products", rs_id, files), data)


@pytest.fixture
def payload(tmp_path: Path) -> Payload:
    return make_payload(tmp_path / "files")


# -- S3 (moto) ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_bucket(moto_server: MotoHandle) -> str:
    name = f"dest-deliver-{uuid.uuid4().hex[:10]}"
    moto_server.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def moto_raw(moto_server: MotoHandle) -> Iterator[Any]:
    client = moto_server.s3_client()
    yield client
    client.close()


def s3compatible(moto: MotoHandle, bucket: str, endpoint: str, **overrides: Any) -> Destination:
    params: dict[str, Any] = {
        "name": "s3compatible on moto",
        "enabled": True,
        "type": "s3compatible",
        "s3_access_key_id": moto.access_key_id,
        "s3_secret_access_key": moto.secret_access_key,
        "s3_bucket_name": bucket,
        "s3_endpoint": endpoint,
        "s3_region": "us-east-1",
        "s3_path_prefix": TEMPLATE,
    }
    params.update(overrides)
    return parse_destination(params)


def s3_reader(raw: Any, bucket: str) -> Callable[[str], bytes]:
    def read(key: str) -> bytes:
        body: bytes = raw.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    return read


# -- Azure (azurite) ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def azure_container(azurite: Azurite) -> str:
    name = f"deliver-{uuid.uuid4().hex[:10]}"
    azurite.create_container(name)
    return name


def azure_destination(azurite: Azurite, container: str, **overrides: Any) -> Destination:
    params: dict[str, Any] = {
        "name": "azure on azurite",
        "enabled": True,
        "type": "azure",
        "azure_account_name": AZURITE_ACCOUNT_NAME,
        "azure_account_key": AZURITE_ACCOUNT_KEY,
        "azure_container_name": container,
        "azure_endpoint": azurite.blob_endpoint,
        "azure_path_prefix": TEMPLATE,
    }
    params.update(overrides)
    return parse_destination(params)


def azure_reader(azurite: Azurite, container: str) -> Callable[[str], bytes]:
    client = ContainerClient(
        azurite.blob_endpoint,
        container,
        credential={"account_name": azurite.account_name, "account_key": azurite.account_key},
    )

    def read(key: str) -> bytes:
        return client.download_blob(key).readall()

    return read


# -- OSS (the double) -----------------------------------------------------------------------


def oss_destination(double: OssDouble, **overrides: Any) -> Destination:
    params: dict[str, Any] = {
        "name": "oss on the double",
        "enabled": True,
        "type": "oss",
        "oss_access_key": OSS_KEY,
        "oss_secret_key": OSS_SECRET,
        "oss_bucket_name": OSS_BUCKET,
        "oss_region_id": "oss-cn-hangzhou",
        "oss_endpoint": double.endpoint,
        "oss_path_prefix": TEMPLATE,
    }
    params.update(overrides)
    return parse_destination(params)


def oss_reader(double: OssDouble) -> Callable[[str], bytes]:
    bucket = oss2.Bucket(
        oss2.AuthV4(OSS_KEY, OSS_SECRET),
        double.endpoint,
        OSS_BUCKET,
        region=signing_region("oss-cn-hangzhou"),
    )

    def read(key: str) -> bytes:
        data: bytes = bucket.get_object(key).read()
        return data

    return read


# -- local ------------------------------------------------------------------------------------


def local_destination(directory: Path, **overrides: Any) -> Destination:
    directory.mkdir(parents=True, exist_ok=True)
    params: dict[str, Any] = {
        "name": "local",
        "enabled": True,
        "type": "local",
        "local_directory": str(directory),
        "local_path_prefix": TEMPLATE,
    }
    params.update(overrides)
    return parse_destination(params)


def local_reader(directory: Path) -> Callable[[str], bytes]:
    return lambda key: (directory / key).read_bytes()


SECRETS = (AZURITE_ACCOUNT_KEY, OSS_SECRET)


def no_secret_in(text: str, *extra: str) -> None:
    for secret in (*SECRETS, *extra):
        assert secret not in text


# -- every type at once -----------------------------------------------------------------------

Target = tuple[Destination, Callable[[str], bytes]]


@pytest.fixture
def every_type(
    tmp_path: Path,
    moto_server: MotoHandle,
    moto_bucket: str,
    moto_raw: Any,
    azurite: Azurite,
    azure_container: str,
    oss_double: OssDouble,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., list[Target]]:
    """``make(**common)``: one destination of every built-in type on its real server (s3 and
    gcs HMAC on moto, s3compatible on moto, azure on azurite, oss on the double, local), each
    with ``common`` fields applied, and a reader of its objects through the raw SDK."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)  # how type s3 finds moto
    s3_read = s3_reader(moto_raw, moto_bucket)

    def make(**common: Any) -> list[Target]:
        run = uuid.uuid4().hex[:6]
        local_dir = tmp_path / f"local-{run}"
        return [
            (local_destination(local_dir, **common), local_reader(local_dir)),
            (
                azure_destination(azurite, azure_container, **common),
                azure_reader(azurite, azure_container),
            ),
            (oss_destination(oss_double, **common), oss_reader(oss_double)),
            (
                s3compatible(
                    moto_server,
                    moto_bucket,
                    moto_server.endpoint,
                    s3_path_prefix=f"compat-{run}/" + TEMPLATE,
                    **common,
                ),
                s3_read,
            ),
            (
                parse_destination(
                    {
                        "name": "s3 on moto",
                        "enabled": True,
                        "type": "s3",
                        "s3_access_key_id": moto_server.access_key_id,
                        "s3_secret_access_key": moto_server.secret_access_key,
                        "s3_bucket_name": moto_bucket,
                        "s3_path_prefix": f"aws-{run}/" + TEMPLATE,
                        **common,
                    }
                ),
                s3_read,
            ),
            (
                parse_destination(
                    {
                        "name": "gcs (hmac) on moto",
                        "enabled": True,
                        "type": "gcs",
                        "gcs_access_key": moto_server.access_key_id,
                        "gcs_secret_key": moto_server.secret_access_key,
                        "gcs_bucket_name": moto_bucket,
                        "gcs_endpoint": moto_server.endpoint,
                        "gcs_path_prefix": f"gcs-{run}/" + TEMPLATE,
                        **common,
                    }
                ),
                s3_read,
            ),
        ]

    return make
