"""Scale-out delivery throughput with 1, 2 and 4 Celery worker processes.

One local moto server (auth on), one stored ``s3compatible`` destination, PostgreSQL (a
fresh schema, dropped afterwards) and Redis — or RabbitMQ with ``--broker rabbitmq``. For
each worker count *k*, ``destinations worker -P prefork -c k`` is started and waited for,
then N result sets of 3 small files are fanned out (one task each) and the clock runs until
every status in the database is final. Throughput is result sets per second; the ratio is
to one worker process. Machine CPU use (``/proc/stat``) and the moto server's own CPU share
are recorded for each run, to say where scaling stops.

Run: ``python benchmarks/bench_scaleout.py`` (``--quick``: 40 result sets instead of 200).
Prints a Markdown table, writes ``benchmarks/results/scaleout.json``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import _common
from _common import ROOT, Row

FILES = {"rows.jsonl": 48 * 1024, "summary.csv": 4 * 1024, "meta.json": 1024}
WORKERS = (1, 2, 4)
BROKERS = {
    "redis": "redis://127.0.0.1:6379/0",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//",
}
POSTGRES_URL = os.environ.get(
    "DESTINATIONS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _cpu_busy() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _proc_cpu(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def _start_worker(
    k: int, broker: str, database_url: str, queue: str, key: str, log: Path
) -> subprocess.Popen[bytes]:
    env = {k_: v for k_, v in os.environ.items() if not k_.startswith("DESTINATIONS_")}
    env.update(
        DESTINATIONS_ENCRYPTION_KEYS=key,
        DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS="1",
        PYTHONPATH=str(ROOT),
    )
    command = [
        sys.executable, "-m", "destinations", "worker",
        "--broker-url", broker, "--database-url", database_url, "--queue", queue,
        "--pool", "prefork", "--concurrency", str(k), "--loglevel", "warning",
        "--transport-option", f"global_keyprefix={queue}:",
        "--", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    # A prefork node is ready when its k pool processes exist.
    while len(_children(proc.pid)) < k:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    time.sleep(1.0)  # the consumer connects after the pool is up
    return proc


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(x) for x in text)
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--quick", action="store_true", help="40 result sets instead of 200")
    parser.add_argument("--broker", choices=sorted(BROKERS), default="redis")
    args = parser.parse_args()
    count = 40 if args.quick else 200

    import sqlalchemy as sa
    from cryptography.fernet import Fernet
    from pydantic_core import to_jsonable_python
    from sqlalchemy.pool import NullPool

    from destinations import ResultFile, ResultSet, parse_destination
    from destinations.celery import create_celery, fan_out
    from destinations.persistence import (
        FINAL_STATUSES,
        DeliveryStatusRow,
        DestinationRow,
        SecretBox,
        create_account,
        make_engine,
        read_delivery_statuses,
        upgrade,
        utcnow,
    )
    from tests.emulators.servers import MotoServer

    broker = BROKERS[args.broker]
    schema = f"destinations_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    database_url = f"{POSTGRES_URL}?options={quote(f'-csearch_path={schema}')}"
    key = Fernet.generate_key().decode()
    runs: list[dict[str, Any]] = []
    try:
        with MotoServer() as moto, tempfile.TemporaryDirectory() as tmp:
            key_id, secret = moto.enable_auth()
            bucket = f"bench-scaleout-{uuid.uuid4().hex[:8]}"
            moto.create_bucket(bucket, "us-east-1", key_id, secret)
            engine = make_engine(database_url)
            upgrade(engine)
            create_account(engine, "bench")
            dest = parse_destination(
                {
                    "name": "moto", "enabled": True, "type": "s3compatible",
                    "s3_access_key_id": key_id, "s3_secret_access_key": secret,
                    "s3_bucket_name": bucket, "s3_endpoint": moto.endpoint,
                    "s3_region": "us-east-1", "s3_path_prefix": "%COLLECTION_ID%/%RESULT_SET_ID%",
                }
            )  # fmt: skip
            params = dest.to_params(reveal_secrets=True)
            secret_names = dest.destination_type.secret_fields
            now = utcnow()
            with sa.orm.Session(engine) as session, session.begin():
                session.add(
                    DestinationRow(
                        id="bench", account_id=1, name="moto", type=dest.type, enabled=True,
                        params={k: to_jsonable_python(v) for k, v in params.items()
                                if k not in secret_names
                                and k not in ("id", "name", "type", "enabled")},
                        secrets=SecretBox([key]).encrypt(
                            {k: to_jsonable_python(params[k]) for k in secret_names
                             if k in params}),
                        version=1, created_at=now, updated_at=now, last_verified_at=None,
                    )
                )  # fmt: skip
            files = []
            for name, size in FILES.items():
                path = Path(tmp) / name
                path.write_bytes(os.urandom(size))
                files.append(ResultFile(name, path))
            assert moto.pid is not None
            for k in WORKERS:
                queue = f"destinations-bench-{uuid.uuid4().hex[:8]}"
                proc = _start_worker(k, broker, database_url, queue, key, Path(tmp) / f"w{k}.log")
                app = create_celery(
                    broker, database_url, queue=queue, encryption_keys=key,
                    transport_options={"global_keyprefix": f"{queue}:"},
                )  # fmt: skip
                try:
                    collection = f"k{k}-{queue}"
                    busy0, total0 = _cpu_busy()
                    moto0 = _proc_cpu(moto.pid)
                    pids = [proc.pid, *_children(proc.pid)]
                    workers0 = sum(_proc_cpu(p) for p in pids)
                    own0 = time.process_time()
                    started = time.perf_counter()
                    for i in range(count):
                        fan_out(app, ResultSet(collection, "bench", f"{collection}-{i}", files),
                                ["bench"])  # fmt: skip
                    fanned_out = time.perf_counter() - started
                    done = (
                        sa.select(sa.func.count())
                        .select_from(DeliveryStatusRow)
                        .where(
                            DeliveryStatusRow.collection_id == collection,
                            DeliveryStatusRow.status.in_(sorted(FINAL_STATUSES)),
                        )
                    )
                    while True:
                        with engine.connect() as connection:
                            if connection.execute(done).scalar_one() >= count:
                                break
                        if time.perf_counter() - started > 600:
                            raise RuntimeError("the run did not finish in 10 minutes")
                        time.sleep(0.1)
                    elapsed = time.perf_counter() - started
                    busy1, total1 = _cpu_busy()
                    moto_cpu = _proc_cpu(moto.pid) - moto0
                    workers_cpu = sum(_proc_cpu(p) for p in pids) - workers0
                    own_cpu = time.process_time() - own0
                    rows = [
                        r for r in read_delivery_statuses(engine) if r.collection_id == collection
                    ]
                    failed = sum(r.status != "success" for r in rows)
                finally:
                    app.close()
                    _stop(proc)
                runs.append(
                    {
                        "workers": k,
                        "result_sets": count,
                        "seconds": round(elapsed, 3),
                        "result_sets_per_second": round(count / elapsed, 2),
                        "machine_cpu_busy": round((busy1 - busy0) / max(1, total1 - total0), 3),
                        "moto_cores": round(moto_cpu / elapsed, 2),
                        "worker_cores": round(workers_cpu / elapsed, 2),
                        "fan_out_seconds": round(fanned_out, 3),
                        "fan_out_process_cores": round(own_cpu / elapsed, 2),
                        "worker_cpu_ms_per_result_set": round(workers_cpu / count * 1000, 1),
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                        "failed": failed,
                    }
                )
                print(runs[-1], flush=True)
            engine.dispose()
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    base = runs[0]["result_sets_per_second"]
    rows = []
    for run in runs:
        rows.append(
            Row(
                benchmark=f"scale-out: {count} result sets of {len(FILES)} files to moto, "
                f"{run['workers']} worker process(es), {args.broker}",
                framework=f"{run['result_sets_per_second']:.1f} result sets/s",
                alternative=f"1 worker process: {base:.1f} result sets/s",
                ratio=f"{run['result_sets_per_second'] / base:.2f}x",
                target="reported",
                met=None,
                note=f"machine CPU {run['machine_cpu_busy'] * 100:.0f}% of {os.cpu_count()} "
                f"cores; workers {run['worker_cores']:.2f} cores "
                f"({run['worker_cpu_ms_per_result_set']:.0f} ms CPU per result set), moto "
                f"{run['moto_cores']:.2f} cores, fan-out/poller process "
                f"{run['fan_out_process_cores']:.2f} cores; {run['failed']} failed",
            )
        )
    _common.write(Path(args.out), "scaleout", rows, runs=runs, broker=args.broker)


if __name__ == "__main__":
    main()
