"""One verification through ``destinations.verify`` vs the raw SDK's put + delete, every type.

Servers, all on loopback: moto with auth (``s3``, ``s3compatible``, ``gcs`` HMAC keys),
gcp-storage-emulator plus a loopback OAuth token endpoint (``gcs`` service account), azurite
(``azure``) and the OSS double (``oss``).

Each round runs, in rotating order, for every type:

- ``verify(destination)``: what saving a destination does (opens a store, so it creates an
  SDK client, puts the probe, deletes it, closes the store);
- raw, new client: the SDK client created with the same settings the plugin uses (timeouts,
  retries off, pool size, addressing, checksums), then ``put`` + ``delete`` of a key and body
  of the same sizes, then closed. The fair comparison: ``verify`` creates a client too;
- raw, reused client: ``put`` + ``delete`` on one client made before the run. Reported
  honestly, with no target: the framework never reuses a client across verifications, since
  each verification is for new settings.

The ratio is the median of each round's ratio (paired: load that drifts during the run hits
both sides of a pair alike); the note gives the client CPU ratio (this process's CPU time per
cycle, which the machine's other load changes much less than the wall clock). Then
the request count of one verification, and of the raw put + delete, through a CountingProxy.
Finally the framework's own cost: ``verify`` against a store that does nothing.

Targets: verify <= 1.05x raw (new client); exactly 2 requests.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import Row, median, ms, write

import destinations
from destinations import parse_destination, verify
from tests.emulators.gcs_auth import TokenServer, new_key, service_account_json
from tests.emulators.oss_double import OssDouble
from tests.emulators.servers import (
    AZURITE_ACCOUNT_KEY,
    AZURITE_ACCOUNT_NAME,
    Azurite,
    CountingProxy,
    GcsEmulator,
    MotoServer,
)

TIMEOUT = 30.0
PREFIX = "bench/"
MiB = 1024 * 1024
# Same length as the framework's probe key and body, so both sides send the same bytes.
_SAMPLE_KEY = f"{PREFIX}destinations-verify-{uuid.uuid4().hex}.txt"
_SAMPLE_BODY = (
    f"destinations verification probe {_SAMPLE_KEY}\n"
    f"written {'2026-01-01T00:00:00.000000+00:00'}; safe to delete\n"
).encode()
_counter = iter(range(1 << 60))


def raw_key() -> str:
    return f"{PREFIX}destinations-verify-{next(_counter):032x}.txt"


@dataclass
class Raw:
    """A raw SDK client: its put, delete and close."""

    put: Callable[[str, bytes], None]
    delete: Callable[[str], None]
    close: Callable[[], None]


@dataclass
class Case:
    name: str
    params: dict[str, Any]  # the destination, against the server directly
    proxied: Callable[[str], dict[str, Any]]  # the destination at a proxy endpoint
    upstream: str  # what the CountingProxy forwards to
    new_raw: Callable[[str], Raw]  # a raw client for an endpoint
    proxy_suffix: str = ""  # e.g. the azurite account path


# -- raw clients, with each plugin's client settings -----------------------------------------


def _boto3_session() -> Any:
    import boto3.session
    import botocore.session

    core = botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, "/dev/null", None),
            "credentials_file": (None, None, "/dev/null", None),
        }
    )
    return boto3.session.Session(botocore_session=core)


_session_lock = threading.Lock()
_boto_session: Any = None


def raw_boto3(
    key_id: str,
    secret: str,
    bucket: str,
    region: str,
    addressing: str,
    checksums: str,
    endpoint: str | None,
) -> Raw:
    from botocore.config import Config

    global _boto_session
    config = Config(
        connect_timeout=TIMEOUT,
        read_timeout=TIMEOUT,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=10,
        s3={"addressing_style": addressing},
        request_checksum_calculation=checksums,
        response_checksum_validation=checksums,
    )
    with _session_lock:
        if _boto_session is None:
            _boto_session = _boto3_session()
        client = _boto_session.client(
            "s3",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            region_name=region,
            endpoint_url=endpoint,
            config=config,
        )
    return Raw(
        put=lambda k, body: client.put_object(
            Bucket=bucket, Key=k, Body=body, ContentType="text/plain"
        ),
        delete=lambda k: client.delete_object(Bucket=bucket, Key=k),
        close=client.close,
    )


def raw_gcs_json(credentials: Any, project: str, bucket: str, endpoint: str) -> Raw:
    from google.auth.transport.requests import AuthorizedSession
    from google.cloud import storage
    from requests.adapters import HTTPAdapter

    http = AuthorizedSession(credentials, refresh_timeout=TIMEOUT)
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=10, max_retries=0)
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    client = storage.Client(
        project=project,
        credentials=credentials,
        _http=http,
        client_options={"api_endpoint": endpoint},
    )
    # As the plugin does: no background bucket-metadata request per client (an extra GET).
    if getattr(client, "_bucket_metadata_cache", None) is not None:
        client._bucket_metadata_cache = None
    handle = client.bucket(bucket)
    timeout = (TIMEOUT, TIMEOUT)

    def put(k: str, body: bytes) -> None:
        handle.blob(k, chunk_size=8 * MiB).upload_from_file(
            io.BytesIO(body),
            size=len(body),
            content_type="text/plain",
            timeout=timeout,
            retry=None,
        )

    return Raw(
        put=put,
        delete=lambda k: handle.blob(k).delete(timeout=timeout, retry=None),
        close=client.close,
    )


def raw_azure(account_url: str, container: str) -> Raw:
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import ContainerClient, ContentSettings, ExponentialRetry
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    adapter = HTTPAdapter(
        pool_connections=1,
        pool_maxsize=10,
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    transport = RequestsTransport(
        session=session,
        session_owner=True,
        connection_timeout=TIMEOUT,
        read_timeout=TIMEOUT,
    )
    client = ContainerClient(
        account_url,
        container,
        credential={"account_name": AZURITE_ACCOUNT_NAME, "account_key": AZURITE_ACCOUNT_KEY},
        transport=transport,
        retry_policy=ExponentialRetry(
            initial_backoff=1,
            increment_base=2,
            random_jitter_range=1,
            retry_total=0,
            retry_connect=0,
            retry_read=0,
            retry_status=0,
        ),
        max_single_put_size=8 * MiB - 1,
        max_block_size=8 * MiB,
        min_large_block_upload_threshold=1,
    )
    settings = ContentSettings(content_type="text/plain")

    def put(k: str, body: bytes) -> None:
        client.get_blob_client(k).upload_blob(
            io.BytesIO(body),
            length=len(body),
            blob_type="BlockBlob",
            overwrite=True,
            content_settings=settings,
            max_concurrency=4,
        )

    return Raw(
        put=put,
        delete=lambda k: client.get_blob_client(k).delete_blob(delete_snapshots="include"),
        close=client.close,
    )


def raw_oss(key_id: str, secret: str, bucket: str, endpoint: str) -> Raw:
    import oss2
    import requests.adapters
    from urllib3.util.retry import Retry

    retry = Retry(
        total=0,
        connect=0,
        read=False,
        status=0,
        other=0,
        redirect=0,
        backoff_factor=0,
        raise_on_status=False,
    )
    adapter = requests.adapters.HTTPAdapter(pool_connections=10, pool_maxsize=10, max_retries=retry)
    session = oss2.Session(adapter=adapter)
    handle = oss2.Bucket(
        oss2.AuthV4(key_id, secret),
        endpoint,
        bucket,
        session=session,
        connect_timeout=TIMEOUT,
        region="cn-hangzhou",
        app_name="destinations-oss",
    )
    return Raw(
        put=lambda k, body: handle.put_object(k, body, headers={"Content-Type": "text/plain"}),
        delete=handle.delete_object,
        close=session.session.close,
    )


# -- the cases ---------------------------------------------------------------------------------


@contextmanager
def cases(only: set[str] | None) -> Iterator[list[Case]]:
    def wanted(name: str) -> bool:
        return only is None or name in only

    with ExitStack() as stack:
        out: list[Case] = []
        if wanted("s3") or wanted("s3compatible") or wanted("gcs-hmac"):
            moto = stack.enter_context(MotoServer())
            key_id, secret = moto.enable_auth()
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            moto.create_bucket(bucket)
            common = {
                "name": "bench",
                "enabled": True,
                "s3_access_key_id": key_id,
                "s3_secret_access_key": secret,
                "s3_bucket_name": bucket,
                "s3_path_prefix": PREFIX + "%COLLECTION_ID%",
            }
            if wanted("s3"):
                # type=s3 reaches a non-AWS endpoint only through AWS_ENDPOINT_URL_S3, which
                # boto3 reads when the client is created: set around each call below.
                out.append(
                    Case(
                        "s3",
                        {**common, "type": "s3"},
                        lambda ep, c=common: {**c, "type": "s3", "_endpoint_env": ep},
                        moto.endpoint,
                        lambda ep, k=key_id, s=secret, b=bucket: raw_boto3(
                            k, s, b, "us-east-1", "auto", "when_supported", None
                        ),
                    )
                )
            if wanted("s3compatible"):
                out.append(
                    Case(
                        "s3compatible",
                        {
                            **common,
                            "type": "s3compatible",
                            "s3_endpoint": moto.endpoint,
                            "s3_region": "us-east-1",
                        },
                        lambda ep, c=common: {
                            **c,
                            "type": "s3compatible",
                            "s3_endpoint": ep,
                            "s3_region": "us-east-1",
                        },
                        moto.endpoint,
                        lambda ep, k=key_id, s=secret, b=bucket: raw_boto3(
                            k, s, b, "us-east-1", "path", "when_required", ep
                        ),
                    )
                )
            if wanted("gcs-hmac"):
                gcs_hmac = {
                    "name": "bench",
                    "enabled": True,
                    "type": "gcs",
                    "gcs_access_key": key_id,
                    "gcs_secret_key": secret,
                    "gcs_bucket_name": bucket,
                    "gcs_path_prefix": PREFIX + "%DATE%",
                }
                out.append(
                    Case(
                        "gcs (HMAC key)",
                        {**gcs_hmac, "gcs_endpoint": moto.endpoint},
                        lambda ep, c=gcs_hmac: {**c, "gcs_endpoint": ep},
                        moto.endpoint,
                        lambda ep, k=key_id, s=secret, b=bucket: raw_boto3(
                            k, s, b, "auto", "path", "when_required", ep
                        ),
                    )
                )
        if wanted("gcs-sa"):
            from google.oauth2 import service_account

            emulator = stack.enter_context(GcsEmulator())
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            emulator.create_bucket(bucket)
            tokens = TokenServer()
            stack.callback(tokens.stop)
            project = "bench-project"
            email = f"bench@{project}.iam.gserviceaccount.com"
            key = new_key()
            tokens.public_keys[email] = key.public_key()
            key_json = service_account_json(
                key, f"{tokens.url}/token", project=project, client_email=email
            )
            # One credentials object (one token) for all raw clients, as the plugin caches its.
            creds = service_account.Credentials.from_service_account_info(
                json.loads(key_json),
                scopes=["https://www.googleapis.com/auth/devstorage.read_write"],
            )
            sa = {
                "name": "bench",
                "enabled": True,
                "type": "gcs",
                "gcs_service_account_json": key_json,
                "gcs_bucket_name": bucket,
                "gcs_path_prefix": PREFIX + "%DATE%",
            }
            out.append(
                Case(
                    "gcs (service account)",
                    {**sa, "gcs_endpoint": emulator.endpoint},
                    lambda ep, c=sa: {**c, "gcs_endpoint": ep},
                    emulator.endpoint,
                    lambda ep, b=bucket, p=project, cr=creds: raw_gcs_json(cr, p, b, ep),
                )
            )
        if wanted("azure"):
            azurite = stack.enter_context(Azurite())
            container = f"bench-{uuid.uuid4().hex[:12]}"
            azurite.create_container(container)
            az = {
                "name": "bench",
                "enabled": True,
                "type": "azure",
                "azure_account_name": AZURITE_ACCOUNT_NAME,
                "azure_account_key": AZURITE_ACCOUNT_KEY,
                "azure_container_name": container,
                "azure_path_prefix": PREFIX + "%DATE%",
            }
            out.append(
                Case(
                    "azure",
                    {**az, "azure_endpoint": azurite.blob_endpoint},
                    lambda ep, c=az: {**c, "azure_endpoint": ep},
                    azurite.base_url,
                    lambda ep, c=container: raw_azure(ep, c),
                    proxy_suffix=f"/{AZURITE_ACCOUNT_NAME}",
                )
            )
        if wanted("oss"):
            key_id, secret, bucket = "LTAI5tBenchAccessKey", "bench-oss-secret", "dest-bench"
            double = OssDouble({key_id: secret}, buckets=[bucket]).start()
            stack.callback(double.stop)
            oss = {
                "name": "bench",
                "enabled": True,
                "type": "oss",
                "oss_access_key": key_id,
                "oss_secret_key": secret,
                "oss_bucket_name": bucket,
                "oss_region_id": "oss-cn-hangzhou",
                "oss_path_prefix": PREFIX + "%DATE%",
            }
            out.append(
                Case(
                    "oss",
                    {**oss, "oss_endpoint": double.endpoint},
                    lambda ep, c=oss: {**c, "oss_endpoint": ep},
                    double.endpoint,
                    lambda ep, k=key_id, s=secret, b=bucket: raw_oss(k, s, b, ep),
                )
            )
        yield out


@contextmanager
def endpoint_env(params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Apply a ``_endpoint_env`` pseudo-field as AWS_ENDPOINT_URL_S3 (the ``s3`` type)."""
    import os

    params = dict(params)
    endpoint = params.pop("_endpoint_env", None)
    if endpoint is None:
        yield params
        return
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    try:
        yield params
    finally:
        del os.environ["AWS_ENDPOINT_URL_S3"]


# -- measuring -------------------------------------------------------------------------------


def time_rounds(case: Case, rounds: int, warmup: int) -> dict[str, list[float]]:
    import os

    if case.name == "s3":
        os.environ["AWS_ENDPOINT_URL_S3"] = case.upstream
    try:
        dest = parse_destination(case.params)
        endpoint = case.upstream + case.proxy_suffix
        reused = case.new_raw(endpoint)

        def framework() -> None:
            verify(dest, timeout=TIMEOUT)

        def raw_new() -> None:
            raw = case.new_raw(endpoint)
            try:
                k = raw_key()
                raw.put(k, _SAMPLE_BODY)
                raw.delete(k)
            finally:
                raw.close()

        def raw_reused() -> None:
            k = raw_key()
            reused.put(k, _SAMPLE_BODY)
            reused.delete(k)

        sides = {"verify": framework, "raw_new": raw_new, "raw_reused": raw_reused}
        times: dict[str, list[float]] = {name: [] for name in [*sides, "cpu_verify", "cpu_raw_new"]}
        order = list(sides)
        for i in range(warmup + rounds):
            order = order[1:] + order[:1]  # rotate, so no side always runs first
            for name in order:
                cpu = time.process_time()
                started = time.perf_counter()
                sides[name]()
                elapsed = time.perf_counter() - started
                cpu = time.process_time() - cpu
                if i >= warmup:
                    times[name].append(elapsed)
                    if name in ("verify", "raw_new"):
                        times[f"cpu_{name}"].append(cpu)
        reused.close()
        return times
    finally:
        os.environ.pop("AWS_ENDPOINT_URL_S3", None)


def count_requests(case: Case) -> tuple[list[str], list[str], list[str]]:
    """Methods seen at the proxy for: the first verification, a later one, raw put+delete."""
    with CountingProxy(case.upstream) as proxy:
        endpoint = proxy.endpoint + case.proxy_suffix
        with endpoint_env(case.proxied(endpoint)) as params:
            dest = parse_destination(params)
            proxy.reset()
            verify(dest, timeout=TIMEOUT)
            first = [r.method for r in proxy.requests]
            proxy.reset()
            verify(dest, timeout=TIMEOUT)
            time.sleep(0.2)  # anything an SDK sends in the background shows up too
            later = [r.method for r in proxy.requests]
            raw = case.new_raw(endpoint)
            proxy.reset()
            try:
                k = raw_key()
                raw.put(k, _SAMPLE_BODY)
                raw.delete(k)
            finally:
                raw.close()
            raw_methods = [r.method for r in proxy.requests]
    return first, later, raw_methods


# -- the framework's own cost: verify against a store that does nothing -----------------------


class _NullStore(destinations.Store):
    def __init__(self, fields: Any, options: Any) -> None:
        pass

    def put(self, key: str, source: Any, *, size: int | None, content_type: str | None) -> None:
        source.read()

    def delete(self, key: str) -> None:
        pass


def framework_cost(n: int) -> dict[str, float]:
    """Microseconds per verify() against a do-nothing store, and per bare open+put+delete."""
    from pydantic import BaseModel, ConfigDict

    from destinations import DestinationType, StoreOptions, hookimpl

    class NullFields(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        null_path_prefix: str = ""

    class Plugin:
        @hookimpl
        def destinations_register_types(self, register: Callable[[Any], None]) -> None:
            register(
                DestinationType(
                    name="null",
                    fields=NullFields,
                    open_store=_NullStore,
                    prefix_field="null_path_prefix",
                    description="does nothing",
                )
            )

    if "null" not in destinations.available_types():
        destinations.register_plugin(Plugin(), "bench-null")
    dest = parse_destination(
        {"name": "n", "enabled": True, "type": "null", "null_path_prefix": PREFIX + "%DATE%"}
    )
    options = StoreOptions()
    body = _SAMPLE_BODY

    def bare() -> None:
        store = _NullStore(None, options)
        store.put(_SAMPLE_KEY, io.BytesIO(body), size=len(body), content_type="text/plain")
        store.delete(_SAMPLE_KEY)
        store.close()

    best_verify = best_bare = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            verify(dest, timeout=TIMEOUT)
        best_verify = min(best_verify, (time.perf_counter() - started) / n)
        started = time.perf_counter()
        for _ in range(n):
            bare()
        best_bare = min(best_bare, (time.perf_counter() - started) / n)
    return {"verify_us": best_verify * 1e6, "bare_us": best_bare * 1e6}


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="few rounds (smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds per type (default 60, quick 5)")
    parser.add_argument("--only", help="comma-separated: s3,s3compatible,gcs-hmac,gcs-sa,azure,oss")
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 60)
    warmup = 2 if args.quick else 5
    only = set(args.only.split(",")) if args.only else None

    rows: list[Row] = []
    details: dict[str, Any] = {"rounds": rounds, "types": {}}
    with cases(only) as todo:
        for case in todo:
            times = time_rounds(case, rounds, warmup)
            first, later, raw_methods = count_requests(case)
            t_verify, t_new, t_reused = (
                median(times[k]) for k in ("verify", "raw_new", "raw_reused")
            )
            # This process's CPU per cycle (all threads): what the machine's other load does not
            # change much. It includes the in-process OSS double's and token server's share.
            cpu_ratio = median(times["cpu_verify"]) / median(times["cpu_raw_new"])
            # Paired: each round's ratio, then the median, so load that drifts during the run
            # hits both sides of a pair alike.
            pairs = list(zip(times["verify"], times["raw_new"], times["raw_reused"], strict=True))
            ratio_new = median(v / n for v, n, _ in pairs)
            ratio_reused = median(v / r for v, _, r in pairs)
            details["types"][case.name] = {
                "verify_ms": {"median": t_verify * 1e3, "min": min(times["verify"]) * 1e3},
                "raw_new_client_ms": {"median": t_new * 1e3, "min": min(times["raw_new"]) * 1e3},
                "raw_reused_client_ms": {
                    "median": t_reused * 1e3,
                    "min": min(times["raw_reused"]) * 1e3,
                },
                "ratio_vs_new_client": ratio_new,
                "cpu_ms_per_cycle": {
                    "verify": median(times["cpu_verify"]) * 1e3,
                    "raw_new_client": median(times["cpu_raw_new"]) * 1e3,
                    "ratio": cpu_ratio,
                },
                "ratio_vs_new_client_best_of": min(times["verify"]) / min(times["raw_new"]),
                "ratio_vs_reused_client": ratio_reused,
                "requests_first_verification": first,
                "requests_later_verification": later,
                "requests_raw_put_delete": raw_methods,
            }
            rows.append(
                Row(
                    f"verify, {case.name}, vs raw SDK put+delete with a new client",
                    ms(t_verify),
                    ms(t_new),
                    f"{ratio_new:.3f}x the time",
                    "<= 1.05x",
                    ratio_new <= 1.05,
                    f"client CPU {cpu_ratio:.3f}x",
                )
            )
            rows.append(
                Row(
                    f"verify, {case.name}, vs raw SDK put+delete on a reused client",
                    ms(t_verify),
                    ms(t_reused),
                    f"{ratio_reused:.2f}x the time",
                    "none (client creation is part of verify)",
                    None,
                )
            )
            rows.append(
                Row(
                    f"storage requests per verification, {case.name}",
                    f"{len(later)} ({' '.join(later)})",
                    f"{len(raw_methods)} (raw put+delete)",
                    f"{len(later) / max(len(raw_methods), 1):.2f}x",
                    "exactly 2",
                    len(later) == 2 and len(first) == 2,
                    "" if len(first) == len(later) else f"first verification: {len(first)}",
                )
            )
            print(
                f"{case.name}: verify {ms(t_verify)}, raw new {ms(t_new)}, "
                f"raw reused {ms(t_reused)}, requests {later}",
                flush=True,
            )
    cost = framework_cost(200 if args.quick else 2000)
    details["framework_cost_us"] = cost
    rows.append(
        Row(
            "verify's own cost: a do-nothing store, vs calling the store directly",
            f"{cost['verify_us']:.0f} µs",
            f"{cost['bare_us']:.1f} µs",
            f"+{cost['verify_us'] - cost['bare_us']:.0f} µs per verification",
            "none (what the framework adds)",
            None,
        )
    )
    write(Path(args.out), "verify", rows, **details)


if __name__ == "__main__":
    main()
