"""Delivery over HTTP through a real ``destinations serve`` process, on SQLite and
PostgreSQL: deliveries accepted and not finished when the server is SIGKILLed are resumed
when it starts again (none lost, none run twice at once), keys byte-identical on moto and a
local directory, exactly one signed webhook event per delivery; and schemathesis over the
new endpoints in an empty network namespace (0 responses of 5xx)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet

from tests.api.deliveries_support import FileServer, Receiver, wait_for
from tests.delivery.conftest import TEMPLATE, s3_reader
from tests.emulators.fixtures import MotoHandle
from tests.postgres import fresh_schema
from tests.security.conftest import Server, create_key, server_env, start_server

ROOT = Path(__file__).resolve().parents[2]
DELIVERIES = 5
FUZZ_CASES_PER_OPERATION = 120  # x 9 operations > 1,000 cases


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'served.db'}"
        return
    with fresh_schema("destinations_dlv") as url:
        yield url


@pytest.fixture
def files_server() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _get(server: Server, path: str, **params: Any) -> Any:
    r = requests.get(f"{server.url}{path}", params={"api_key": server.api_key, **params},
                     timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_sigkill_mid_delivery_resumes_on_start_none_lost_none_twice(
    db_url: str,
    tmp_path: Path,
    files_server: FileServer,
    receiver: Receiver,
    moto_server: MotoHandle,
) -> None:
    keys = None if db_url.startswith("sqlite") else [Fernet.generate_key().decode()]
    env = server_env(keys)
    file_root = tmp_path / "files"
    file_root.mkdir()
    env.update(
        DESTINATIONS_FILE_ROOT=str(file_root),
        DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS="1",
        DESTINATIONS_DELIVERY_LEASE_SECONDS="1.5",
        DESTINATIONS_DELIVERY_WORKERS="2",
        DESTINATIONS_WEBHOOK_RETRY_INITIAL="0.05",
        DESTINATIONS_WEBHOOK_RETRY_MAX_WAIT="0.2",
    )
    root = tmp_path / "local-root"
    root.mkdir()
    log = tmp_path / "server.log"
    server = start_server(db_url, env, log, root)
    restarted: Server | None = None
    try:
        server.api_key = create_key(db_url, env)
        params = {"api_key": server.api_key}
        bucket = f"dlv-kill-{os.urandom(4).hex()}"
        moto_server.create_bucket(bucket)
        ids = []
        for body in (
            {"name": "local", "enabled": True, "type": "local", "local_directory": ".",
             "local_path_prefix": TEMPLATE},
            {"name": "moto", "enabled": True, "type": "s3compatible",
             "s3_access_key_id": moto_server.access_key_id,
             "s3_secret_access_key": moto_server.secret_access_key, "s3_bucket_name": bucket,
             "s3_endpoint": moto_server.endpoint, "s3_region": "us-east-1",
             "s3_path_prefix": TEMPLATE},
        ):
            r = requests.post(f"{server.url}/destinations", params=params, json=body, timeout=60)
            assert r.status_code == 200, r.text
            ids.append(r.json()["destination"]["id"])
        r = requests.put(f"{server.url}/webhooks", params=params, json={"url": receiver.url},
                         timeout=30)
        receiver.secret = r.json()["webhook"]["secret"]
        receiver.script = [503]  # one refusal: the event is retried too

        (file_root / "rows.jsonl").write_bytes(b'{"row": 1}\n' * 1000)
        payloads = {}
        deliveries = []
        for i in range(DELIVERIES):
            name = f"part-{i}.csv"
            payloads[name] = f"n,v\n{i},{'x' * i}\n".encode()
            files_server.files[name] = payloads[name]
            files_server.gated.add(name)
            body = {"collection_id": "c-9", "collection_name": "Killed", "result_set_id": f"k{i}",
                    "files": [{"name": name, "url": files_server.url(name)},
                              {"name": "rows.jsonl", "path": "rows.jsonl"}]}
            r = requests.post(f"{server.url}/deliveries", params=params, json=body, timeout=30)
            assert r.status_code == 202, r.text
            deliveries.append(r.json()["delivery"]["id"])
        # Two runners are inside their deliveries (fetching, held at the gate); three wait.
        wait_for(lambda: sum(files_server.waiting.values()) == 2, 20)
        listed = _get(server, "/deliveries")["deliveries"]
        assert sorted(d["status"] for d in listed) == ["delivering"] * 2 + ["queued"] * 3
        server.kill()  # SIGKILL
        assert server.process.returncode == -9

        restarted = start_server(db_url, env, log, root)
        restarted.api_key = server.api_key
        files_server.gate.set()

        def all_done() -> Any:
            found = [_get(restarted, f"/deliveries/{d}")["delivery"] for d in deliveries]
            return found if all(d["status"] in ("success", "partial", "failed") for d in found) \
                else None

        finished = wait_for(all_done, 60)
        assert [d["status"] for d in finished] == ["success"] * DELIVERIES, finished
        attempts = sorted(d["attempts"] for d in finished)
        assert attempts == [1, 1, 1, 2, 2], attempts  # the two killed runs ran once more
        read_s3 = s3_reader(moto_server.s3_client(), bucket)
        rows = (file_root / "rows.jsonl").read_bytes()
        local_dir = next(p for p in root.iterdir() if p.is_dir())
        for d in finished:
            name = d["files"][0]["name"]
            # One fetch per start: no delivery ran in two places at once.
            assert files_server.requests[name] == d["attempts"], (name, d["attempts"])
            for target in d["destinations"]:
                status = target["destination_status"]
                assert status["status"] == "success"
                k_url, k_path = status["keys"]
                if target["destination_id"] == ids[0]:
                    assert (local_dir / k_url).read_bytes() == payloads[name]
                    assert (local_dir / k_path).read_bytes() == rows
                else:
                    assert read_s3(k_url) == payloads[name]
                    assert read_s3(k_path) == rows

        def events_done() -> bool:
            return len(receiver.accepted) == DELIVERIES
        wait_for(events_done, 30)
        time.sleep(0.5)
        assert dict(receiver.accepted) == {d: 1 for d in deliveries}  # exactly one each
        assert receiver.bad_signatures == 0
        text = log.read_text()
        assert receiver.secret not in text and moto_server.secret_access_key not in text
    finally:
        server.kill()
        if restarted is not None:
            restarted.kill()


def test_schemathesis_over_the_delivery_endpoints_in_an_empty_netns() -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("unshare and ip (util-linux, iproute2) are needed to fuzz in an empty netns")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESTINATIONS_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c",
         f"ip link set lo up && exec {sys.executable} -m tests.api.deliveries_fuzz "
         f"{FUZZ_CASES_PER_OPERATION}"],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\nfuzzing the delivery endpoints: {stats}")
    assert stats["operations"] == 9
    assert stats["cases"] >= 1000
    assert stats["5xx"] == 0 and stats["bad_envelope"] == 0, stats["failures"]
    assert stats["2xx"] > 0  # some generated requests were valid, so they reached the work
