"""``destinations bench verify``: N cycles counted, the table and JSON shapes, ordered
percentiles; against a local directory, moto (s3compatible, auth on) and a stored destination.
No wall-clock assertions: only shapes, counts and orderings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from destinations import parse_destination
from destinations._bench import STEPS, StepStats, bench_verify, percentile
from destinations.cli import main
from tests.emulators.fixtures import MotoHandle
from tests.emulators.servers import CountingProxy

STEP_NAMES = [name for name, _ in STEPS]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "DESTINATIONS_ENCRYPTION_KEYS",
        "DESTINATIONS_DATABASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def _local_args(directory: Path) -> list[str]:
    return [
        "-p",
        "type=local",
        "-p",
        f"local_directory={directory}",
        "-p",
        "local_path_prefix=bench/%DATE%",
    ]


def _run(*args: str) -> Any:
    result = CliRunner().invoke(main, ["bench", "verify", *args], catch_exceptions=False)
    return result


def _check_json(data: dict[str, Any], cycles: int, concurrency: int, dtype: str) -> None:
    assert data["destination_type"] == dtype
    assert data["cycles"] == cycles
    assert data["concurrency"] == concurrency
    assert data["requests_per_cycle"] == 2
    assert data["requests_total"] == 2 * cycles
    assert data["wall_ms"] > 0
    assert list(data["steps"]) == STEP_NAMES
    for stats in data["steps"].values():
        assert list(stats) == ["p50_ms", "p95_ms", "p99_ms", "max_ms"]
        assert 0 <= stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"] <= stats["max_ms"]


def _check_table(text: str, cycles: int, dtype: str) -> None:
    lines = text.strip().splitlines()
    assert lines[0].startswith(f"{cycles} verification cycles of a {dtype} destination")
    assert lines[1].split() == ["step", "p50", "ms", "p95", "ms", "p99", "ms", "max", "ms"]
    assert [line.split()[0] for line in lines[2:6]] == STEP_NAMES
    for line in lines[2:6]:
        p50, p95, p99, top = map(float, line.split()[1:])
        assert p50 <= p95 <= p99 <= top
    assert lines[6] == f"storage requests per cycle: 2 ({2 * cycles} in all)"


def test_percentiles_are_nearest_rank_and_ordered() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert percentile([3.0], 99) == 3.0
    stats = StepStats.of([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (stats.p50, stats.p95, stats.p99, stats.max) == (3.0, 5.0, 5.0, 5.0)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_local_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    result = _run("-n", "7", "--json", str(out), *_local_args(tmp_path))
    assert result.exit_code == 0, result.output
    _check_table(result.stdout, 7, "local")
    _check_json(json.loads(out.read_text()), 7, 1, "local")
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p != out]  # probes deleted


def test_local_concurrent_counts_every_cycle(tmp_path: Path) -> None:
    seen = []
    dest = parse_destination(
        {"name": "n", "enabled": True, "type": "local", "local_directory": str(tmp_path)}
    )
    result = bench_verify(dest, cycles=25, concurrency=4, on_cycle=seen.append)
    assert len(seen) == result.cycles == 25
    assert len({r.probe_key for r in seen}) == 25
    _check_json(result.to_json(), 25, 4, "local")


def test_json_to_stdout_and_spec_file(tmp_path: Path) -> None:
    spec = tmp_path / "dest.json"
    spec.write_text(json.dumps({"type": "local", "local_directory": str(tmp_path)}))
    result = _run("-n", "3", "--concurrency", "2", "--spec", str(spec), "--json", "-")
    assert result.exit_code == 0, result.output
    _check_json(json.loads(result.stdout), 3, 2, "local")


def test_bad_input_exits_2(tmp_path: Path) -> None:
    assert _run().exit_code == 2  # no destination
    assert _run("-p", "type=local").exit_code == 2  # local_directory missing
    assert _run("-n", "0", *_local_args(tmp_path)).exit_code == 2
    both = _run("--destination", "x", *_local_args(tmp_path))
    assert both.exit_code == 2


def test_failed_cycle_exits_1(tmp_path: Path) -> None:
    target = tmp_path / "gone"
    target.mkdir()
    dest = ["-p", "type=local", "-p", f"local_directory={target}"]
    # The directory exists when parsed, and is gone by the time the probe is put.
    from destinations import local

    original = local.LocalStore.put

    def put_after_removal(self: Any, *args: Any, **kwargs: Any) -> None:
        target.rmdir()
        original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(local.LocalStore, "put", put_after_removal)
        result = _run("-n", "3", *dest)
    assert result.exit_code == 1
    assert "verification failed: step=put code=bucket_not_found" in result.stderr


def test_as_a_process(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "destinations",
            "bench",
            "verify",
            "-n",
            "4",
            *_local_args(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )
    assert out.returncode == 0, out.stderr
    _check_table(out.stdout, 4, "local")
    assert out.stderr == ""  # not a terminal: no progress bar


def test_s3compatible_on_moto_counts_requests_at_the_server(
    moto_server: MotoHandle, tmp_path: Path
) -> None:
    bucket = f"dest-bench-{uuid.uuid4().hex[:12]}"
    moto_server.create_bucket(bucket)
    with CountingProxy(moto_server.endpoint) as proxy:
        spec = {
            "type": "s3compatible",
            "s3_access_key_id": moto_server.access_key_id,
            "s3_secret_access_key": moto_server.secret_access_key,
            "s3_bucket_name": bucket,
            "s3_endpoint": proxy.endpoint,
            "s3_region": "us-east-1",
            "s3_path_prefix": "bench/%COLLECTION_ID%",
        }
        spec_file = tmp_path / "spec.json"
        spec_file.write_text(json.dumps(spec))
        out = tmp_path / "out.json"
        result = _run("-n", "6", "--concurrency", "3", "--spec", str(spec_file), "--json", str(out))
        assert result.exit_code == 0, result.output
        methods = sorted(r.method for r in proxy.requests)
    _check_table(result.stdout, 6, "s3compatible")
    _check_json(json.loads(out.read_text()), 6, 3, "s3compatible")
    assert methods == ["DELETE"] * 6 + ["PUT"] * 6  # what the report says is what happened


def test_stored_destination_by_id(tmp_path: Path) -> None:
    from destinations.api import create_api_key, create_app

    url = f"sqlite:///{tmp_path / 'api.db'}"
    (tmp_path / "root").mkdir()
    app = create_app(database_url=url, local_root=tmp_path / "root")
    try:
        service = app.state.service
        account = service.authenticate(create_api_key("bench", database_url=url))
        # each account writes inside its own subtree of the local root
        (tmp_path / "root" / str(account) / "out").mkdir(parents=True)
        created = service.create(
            account, {"name": "stored", "type": "local", "enabled": True, "local_directory": "out"}
        )
    finally:
        app.state.engine.dispose()
    out = tmp_path / "out.json"
    result = _run(
        "-n", "2", "--destination", created["id"], "--database-url", url, "--output", str(out)
    )
    assert result.exit_code == 0, result.output
    _check_json(json.loads(out.read_text()), 2, 1, "local")
    missing = _run("--destination", "nope", "--database-url", url)
    assert missing.exit_code == 2
    assert "no destination with id 'nope'" in missing.output
