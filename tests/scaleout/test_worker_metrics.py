"""Worker metrics and logs against the real Redis and RabbitMQ on this machine, with real
``destinations worker`` processes: ``/metrics`` scraped over loopback (prefork through
prometheus-client's multiprocess mode, solo from the main process), the broker queue's
depth while a task holds the only worker process, JSON log lines with each task's ids and
no secret, and the embedded runner's queued deliveries."""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from destinations import ResultFile, ResultSet, parse_destination
from destinations.celery import FileRef, ResultSetRef, create_celery, fan_out
from destinations.celery.cli import broker_queue_depth
from tests.emulators.fixtures import MotoHandle
from tests.scaleout.conftest import Broker, Database, Workers

NOW = datetime(2026, 5, 21, 8, 30, 0, tzinfo=UTC)
METRICS_AT = re.compile(rb"metrics at http://127\.0\.0\.1:(\d+)/metrics")


@dataclass
class FileServer:
    """Loopback HTTP file server; ``/slow/...`` answers only once ``release`` is set."""

    base_url: str
    root: Path
    requested_slow: threading.Event
    release: threading.Event


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "served"
    root.mkdir()
    requested, release = threading.Event(), threading.Event()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/slow/"):
                requested.set()
                release.wait(30)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield FileServer(f"http://127.0.0.1:{server.server_address[1]}", root, requested, release)
    release.set()
    server.shutdown()
    server.server_close()


def metrics_port(workers: Workers, name: str, timeout: float = 10.0) -> int:
    path = workers.log_dir / f"worker-{name}.log"
    deadline = time.monotonic() + timeout
    while (found := METRICS_AT.search(path.read_bytes())) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"worker {name} logged no metrics address\n{workers.logs()}")
        time.sleep(0.1)
    return int(found.group(1))


def scrape(port: int) -> dict[str, float]:
    """Every sample of the worker's ``/metrics`` (over loopback) as ``{name{labels}: value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def wait_for(
    port: int, check: Callable[[dict[str, float]], bool], what: str, workers: Workers
) -> dict[str, float]:
    deadline = time.monotonic() + 15
    while True:
        try:
            samples = scrape(port)
        except OSError as exc:
            pytest.fail(f"{what}: scraping failed ({exc})\n{workers.logs()}", pytrace=False)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            shown = {k: v for k, v in samples.items() if k.startswith("destinations_")}
            pytest.fail(f"{what}: not seen in {shown}\n{workers.logs()}", pytrace=False)
        time.sleep(0.1)


def local_destination(directory: Path) -> Any:
    directory.mkdir(exist_ok=True)
    return parse_destination(
        {
            "name": "local",
            "enabled": True,
            "type": "local",
            "local_directory": str(directory),
            "local_path_prefix": "%RESULT_SET_ID%",
        }
    )


def result_set(tmp_path: Path, rs_id: str, files: dict[str, bytes]) -> ResultSet:
    directory = tmp_path / "shared" / rs_id
    directory.mkdir(parents=True)
    out = []
    for name, body in files.items():
        (directory / name).write_bytes(body)
        out.append(ResultFile(name, directory / name))
    return ResultSet("c-1", "Metrics", rs_id, out)


def test_broker_queue_depth_counts_waiting_messages(
    broker: Broker, sqlite_url: str, make_database: Callable[[str], Database], tmp_path: Path
) -> None:
    db = make_database(sqlite_url)
    target = db.store(local_destination(tmp_path / "out"))
    app = create_celery(
        broker.url, db.url, queue=broker.queue, transport_options=broker.transport_options
    )
    try:
        # A queue the broker never saw (Redis has no key, RabbitMQ no queue): nothing waits.
        assert broker_queue_depth(app, broker.queue) == 0
        for i in range(3):
            fan_out(app, result_set(tmp_path, f"rs-{i}", {"a.txt": b"x"}), [target], now=NOW)
        assert broker_queue_depth(app, broker.queue) == 3
        assert broker_queue_depth(app, f"{broker.queue}-other") == 0
    finally:
        app.close()


def test_prefork_worker_metrics_count_deliveries_and_the_queue_depth(
    broker: Broker,
    postgres_url: str,
    make_database: Callable[[str], Database],
    make_workers: Callable[[Broker, Database], Workers],
    file_server: FileServer,
    tmp_path: Path,
) -> None:
    db = make_database(postgres_url)
    out = tmp_path / "out"
    target = db.store(local_destination(out))
    workers = make_workers(broker, db)
    # One prefork child, replaced after every two tasks: the counters must survive the
    # children that exit (their sample files stay in the multiprocess directory).
    workers.start(
        "m1",
        options=[
            "--pool", "prefork", "--concurrency", "1",
            "--metrics-port", "0", "--metrics-interval", "0.2",
        ],
        celery_options=["--max-tasks-per-child", "2"],
    )
    port = metrics_port(workers, "m1")
    depth = f'destinations_queue_depth{{queue="{broker.queue}"}}'
    success = 'destinations_deliveries_total{status="success",type="local"}'
    wait_for(port, lambda s: s.get(depth) == 0.0, "an empty queue", workers)

    app = create_celery(
        broker.url, db.url, queue=broker.queue, transport_options=broker.transport_options
    )
    try:
        (file_server.root / "slow").mkdir()
        (file_server.root / "slow" / "big.bin").write_bytes(b"s" * 1000)
        slow = ResultSetRef(
            "c-1", "Metrics", "rs-slow", NOW,
            [FileRef("big.bin", url=f"{file_server.base_url}/slow/big.bin")],
        )
        fan_out(app, slow, [target], account_id=db.account_id)
        assert file_server.requested_slow.wait(15), workers.logs()
        sizes = 1000
        # The only child is busy: these wait on the broker.
        for i in range(4):
            body = f"row {i}\n".encode() * (i + 1)
            sizes += len(body)
            fan_out(app, result_set(tmp_path, f"rs-{i}", {"rows.txt": body}), [target], now=NOW)
        wait_for(port, lambda s: s.get(depth) == 4.0, "4 tasks waiting", workers)
        file_server.release.set()
        db.wait_final(expected=5, timeout=30, workers=workers)
        samples = wait_for(
            port, lambda s: s.get(success) == 5.0 and s.get(depth) == 0.0, "5 deliveries", workers
        )
    finally:
        app.close()
    assert samples['destinations_files_total{status="delivered",type="local"}'] == 5.0
    assert samples['destinations_delivered_bytes_total{type="local"}'] == float(sizes)
    assert samples['destinations_upload_seconds_count{outcome="success",type="local"}'] >= 5.0
    assert samples['destinations_delivery_seconds_count{status="success",type="local"}'] == 5.0
    assert not any(k.startswith("destinations_deliveries_total{status=\"failed\"") for k in samples)
    assert all(r.status == "success" for r in db.statuses())
    # Samples come from the children (multiprocess mode), and the queue gauge has no pid.
    assert not any("pid=" in k for k in samples if k.startswith("destinations_"))
    workers.stop()
    log = (workers.log_dir / "worker-m1.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_json_logs_carry_the_task_context_and_no_secret(
    broker: Broker,
    postgres_url: str,
    make_database: Callable[[str], Database],
    make_workers: Callable[[Broker, Database], Workers],
    moto_server: MotoHandle,
    file_server: FileServer,
) -> None:
    db = make_database(postgres_url)
    bucket = f"dest-wlogs-{uuid.uuid4().hex[:10]}"
    moto_server.create_bucket(bucket)
    wrong_secret = f"wrong-{uuid.uuid4().hex}"
    url_token = f"tok{uuid.uuid4().hex}"

    def s3(name: str, secret: str) -> Any:
        return parse_destination(
            {
                "name": name,
                "enabled": True,
                "type": "s3compatible",
                "s3_access_key_id": moto_server.access_key_id,
                "s3_secret_access_key": secret,
                "s3_bucket_name": bucket,
                "s3_endpoint": moto_server.endpoint,
                "s3_region": "us-east-1",
                "s3_path_prefix": "wlogs/%RESULT_SET_ID%",
            }
        )

    good = db.store(s3("good", moto_server.secret_access_key))
    bad = db.store(s3("bad", wrong_secret))
    marker = f"payload-{uuid.uuid4().hex}"
    (file_server.root / "rows.jsonl").write_text(json.dumps({"m": marker}) + "\n")
    workers = make_workers(broker, db)
    workers.start(
        "j1", options=["--log-format", "json", "--metrics-port", "0", "--metrics-interval", "0.2"]
    )
    port = metrics_port(workers, "j1")
    app = create_celery(
        broker.url, db.url, queue=broker.queue, transport_options=broker.transport_options
    )
    try:
        ref = ResultSetRef(
            "c-1", "Logs", "rs-logs", NOW,
            # A query string such as a pre-signed URL's: a file reference, kept out of logs.
            [FileRef("rows.jsonl", url=f"{file_server.base_url}/rows.jsonl?sig={url_token}")],
        )
        fanned = fan_out(app, ref, [good, bad], account_id=db.account_id)
        rows = db.wait_final(expected=2, timeout=30, workers=workers)
    finally:
        app.close()
    by_id = {r.destination_id: r.status for r in rows}
    assert by_id == {good: "success", bad: "failed"}, workers.logs()

    # Solo pool: the main process's own registry, counters by outcome.
    samples = wait_for(
        port,
        lambda s: s.get('destinations_deliveries_total{status="failed",type="s3compatible"}')
        == 1.0,
        "one failed delivery",
        workers,
    )
    assert samples['destinations_deliveries_total{status="success",type="s3compatible"}'] == 1.0
    assert samples['destinations_files_total{status="delivered",type="s3compatible"}'] == 1.0
    assert samples['destinations_files_total{status="failed",type="s3compatible"}'] == 1.0
    assert any(k.startswith("process_resident_memory_bytes") for k in samples)

    path = workers.log_dir / "worker-j1.log"
    text = path.read_text()
    entries = []
    for line in text.splitlines():  # while it runs, every line is one JSON object
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"not a JSON line: {line!r}\n{text[-3000:]}", pytrace=False)
    for entry in entries:
        assert {"time", "level", "logger", "message", "request_id", "account_id"} <= set(entry)
        assert "data" not in entry  # Celery's task arguments
    for destination_id, task_id in fanned.queued.items():
        mine = [e for e in entries if e.get("destination_id") == destination_id]
        assert mine, f"no line for destination {destination_id}\n{text[-3000:]}"
        for e in mine:
            assert e["task_id"] == task_id
            assert e["result_set_id"] == "rs-logs"
            assert e["account_id"] == db.account_id
            assert e["request_id"] is None
        messages = " ".join(e["message"] for e in mine)
        assert "delivering result set rs-logs" in messages
        assert "succeeded in" in messages  # Celery's own line, inside the task's context
        # The "received" line comes from the consumer, outside the task: its id only.
        assert any(
            e.get("task_id") == task_id and "received" in e["message"] and "destination_id" not in e
            for e in entries
        )
    assert any(
        e.get("destination_id") == bad and "delivery task finished: failed" in e["message"]
        for e in entries
    )
    # Lines from the upload threads of core's delivery engine carry the task's ids too.
    assert any(
        e.get("destination_id") == bad
        and e["level"] == "warning"
        and "failed at put" in e["message"]
        for e in entries
    )
    assert any(
        e.get("destination_id") == good and "'good': delivered 1 file(s)" in e["message"]
        for e in entries
    )
    assert any(e["message"].endswith(" ready.") for e in entries)

    workers.stop()
    everything = path.read_text()
    for secret in (moto_server.secret_access_key, wrong_secret, db.key, url_token, marker):
        assert secret not in everything, f"{secret[:6]}… in the worker's output"


def test_embedded_runner_reports_the_deliveries_waiting_for_it(
    sqlite_url: str,
    make_database: Callable[[str], Database],
    file_server: FileServer,
    tmp_path: Path,
) -> None:
    """``serve``'s runner (no broker): ``destinations_queue_depth{queue="embedded"}`` counts
    the stored deliveries no runner holds yet, read from the database at each scrape."""
    from destinations import _metrics
    from destinations._runner import DeliveryRunner, RunnerConfig
    from destinations.persistence import DeliveryStore, NewDelivery

    db = make_database(sqlite_url)
    target = db.store(local_destination(tmp_path / "out"))
    (file_server.root / "slow").mkdir()
    (file_server.root / "slow" / "a.bin").write_bytes(b"a" * 10)
    (file_server.root / "b.bin").write_bytes(b"b" * 10)
    store = DeliveryStore(db.engine, db.box)

    def accept(rs_id: str, path: str) -> None:
        store.insert(
            NewDelivery(
                account_id=db.account_id,
                collection_id="c-1",
                collection_name="Embedded",
                result_set_id=rs_id,
                files=[{"name": "f.bin", "url": f"{file_server.base_url}/{path}",
                        "content_type": "application/octet-stream"}],
                now=NOW,
                mode="local",
                targets=[(target, "local", "queued", "queued")],
            )
        )

    depth = 'destinations_queue_depth{queue="embedded"}'

    def sample() -> float | None:
        for line in _metrics.render().decode().splitlines():
            if line.startswith(depth + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def until(expected: float | None) -> None:
        deadline = time.monotonic() + 15
        while (seen := sample()) != expected:
            assert time.monotonic() < deadline, f"queue depth {seen}, expected {expected}"
            time.sleep(0.05)

    runner = DeliveryRunner(store, db.repository, RunnerConfig(workers=1, poll_interval=0.1))
    finished: list[str] = []
    runner.on_finished = finished.append
    runner.start()
    try:
        until(0.0)
        accept("rs-slow", "slow/a.bin")
        assert file_server.requested_slow.wait(15)  # the one runner slot is busy now
        for i in range(3):
            accept(f"rs-{i}", "b.bin")
        until(3.0)
        file_server.release.set()
        until(0.0)
        deadline = time.monotonic() + 15
        while len(finished) < 4:
            assert time.monotonic() < deadline, finished
            time.sleep(0.05)
    finally:
        runner.stop()
    assert sample() is None  # a stopped runner reports nothing
    assert all(store.get(d).status == "success" for d in finished)


def test_an_unreadable_broker_gives_nan_not_a_stale_depth(
    broker: Broker, sqlite_url: str, make_database: Callable[[str], Database], tmp_path: Path
) -> None:
    """The worker's reader: the real broker's count, then NaN once the broker cannot be read
    (a loopback port nothing listens on), with a warning that names no address."""
    import logging
    import socket

    from destinations import _metrics
    from destinations.celery.cli import _watch_queue

    db = make_database(sqlite_url)
    target = db.store(local_destination(tmp_path / "out"))
    app = create_celery(
        broker.url, db.url, queue=broker.queue, transport_options=broker.transport_options
    )
    fan_out(app, result_set(tmp_path, "rs-nan", {"a.txt": b"x"}), [target], now=NOW)
    stop = threading.Event()
    stop.set()  # one read, then return
    sample = f'destinations_queue_depth{{queue="{broker.queue}"}}'

    def value() -> str:
        lines = [ln for ln in _metrics.render().decode().splitlines() if ln.startswith(sample)]
        return lines[0].rsplit(" ", 1)[1]

    try:
        _watch_queue(app, broker.queue, 0.1, stop)
        assert value() == "1.0"
    finally:
        app.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket closes
    scheme = "redis" if broker.kind == "redis" else "amqp"
    dead = create_celery(
        f"{scheme}://127.0.0.1:{closed}/0" if scheme == "redis"
        else f"amqp://guest:guest@127.0.0.1:{closed}//",
        db.url,
        queue=broker.queue,
    )
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("destinations.celery")
    logger.addHandler(handler)
    try:
        started = time.monotonic()
        _watch_queue(dead, broker.queue, 0.1, stop)
        assert time.monotonic() - started < 15
        assert value() == "NaN"
    finally:
        logger.removeHandler(handler)
        dead.close()
        _metrics.clear_queue_depth(broker.queue)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert warnings and all("reading its depth failed" in w for w in warnings), warnings
    assert f"127.0.0.1:{closed}" not in " ".join(warnings)  # no broker address in the log
