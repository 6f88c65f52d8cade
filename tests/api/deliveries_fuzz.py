"""Schemathesis over the delivery endpoints of a real ``destinations serve``, meant to run in
an empty network namespace (``unshare -n``, loopback brought up): fuzzed file URLs and
webhook URLs name arbitrary hosts, and the server fetches and posts to them in the
background, so nothing may leave the machine. Prints one JSON line of figures.

Run as ``python -m tests.api.deliveries_fuzz CASES_PER_OPERATION``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.envelope import record_answer
from tests.security.conftest import create_key, server_env, start_server

#: The operations this module fuzzes (everything api/_deliveries.py serves).
PATHS = (
    "/deliveries",
    "/deliveries/{id}",
    "/deliveries/{id}/retry",
    "/destinations/verify",
    "/destinations/{id}/verify",
    "/webhooks",
    "/webhooks/secret",
)


def main(cases: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        files = base / "files"
        files.mkdir()
        (files / "a.json").write_text('{"a": 1}')
        root = base / "local-root"
        root.mkdir()
        env = server_env()
        env["DESTINATIONS_FILE_ROOT"] = str(files)
        env["DESTINATIONS_FETCH_TIMEOUT"] = "5"
        db = f"sqlite:///{base / 'fuzz.db'}"
        server = start_server(db, env, base / "server.log", root)
        try:
            key = create_key(db, env)
            return _fuzz(server.url, key, cases)
        finally:
            server.kill()


def _fuzz(url: str, key: str, cases: int) -> dict[str, Any]:
    with requests.Session() as http:
        seed = http.post(f"{url}/destinations", params={"api_key": key}, timeout=30, json={
            "name": "seed", "enabled": True, "type": "local", "local_directory": ".",
        })
        assert seed.status_code == 200, seed.text
        seed_id = seed.json()["destination"]["id"]
        delivered = http.post(f"{url}/deliveries", params={"api_key": key}, timeout=30, json={
            "collection_id": "c", "collection_name": "n", "result_set_id": "r",
            "files": [{"name": "a.json", "path": "a.json"}],
        })
        assert delivered.status_code == 202, delivered.text
        delivery_id = delivered.json()["delivery"]["id"]
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    stats: dict[str, Any] = {"cases": 0, "5xx": 0, "bad_envelope": 0, "2xx": 0, "operations": 0}
    failures: list[str] = []

    def check(response: requests.Response, case: Any) -> None:
        record_answer(response, case, stats, failures)

    def fuzz(strategy: Any, path: str) -> None:
        @settings(
            max_examples=cases,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            case.query = {**(case.query or {}), "api_key": key}
            if case.path_parameters and stats["cases"] % 2:
                known = delivery_id if path.startswith("/deliveries") else seed_id
                case.path_parameters = {"id": known}  # half on one that exists
            check(case.call(base_url=url, timeout=30), case)

        run()

    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path not in PATHS:
            continue
        stats["operations"] += 1
        fuzz(operation.as_strategy(), operation.path)
    stats["seconds"] = round(time.monotonic() - started, 1)
    stats["failures"] = failures[:10]
    return stats


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]))))
