"""Scale-out: delivery as Celery tasks over Redis or RabbitMQ (``pip install
'destinations[celery]'``, which includes the ``api`` extra's database pieces).

One task per (result set, destination). The API replicas (or the embedding service) call
:func:`fan_out`; workers (``destinations worker``) run the tasks. Both share the API's
database and a broker; only the workers need the encryption keys.

* **Message** (JSON only, never pickle): the result set *by reference* — collection id and
  name, result set id, the delivery time ``now`` as an ISO string, and each file's ``name``,
  ``content_type`` and either ``path`` (shared storage every worker mounts) or ``url``
  (http(s), streamed to a temporary file on the worker) — plus the destination *id* and the
  optional account id. No file content and no secret: workers load the destination from the
  database by id and decrypt its secrets there.
* **Idempotent.** ``now`` is fixed at fan-out, so a retried or redelivered task expands the
  same keys and writes the same bytes again (puts overwrite).
* **At least once.** ``acks_late``: a task is acknowledged after it ran, so a worker killed
  mid-task leaves it to be redelivered (RabbitMQ: when the connection drops; Redis: after
  the transport's ``visibility_timeout``); ``reject_on_worker_lost`` requeues it when a
  prefork child dies. One task per worker process is prefetched.
* **Retries.** A transient failure (core's :func:`~destinations.is_transient`, a 5xx or
  timeout fetching a URL, the database briefly unreachable) is retried by Celery with
  exponential backoff and full jitter; core's own retry runs with one attempt inside the
  task, so the two layers never multiply. A retry puts every file again.
* **Outcomes.** The ``destinations_file_delivered`` / ``destinations_delivery_finished``
  hooks run on the worker for every attempt (an attempt that will be retried reports
  ``failed``), and each (result set, destination) has one row in ``delivery_statuses``:
  ``queued`` → ``delivering`` → (``retrying`` →) ``success`` | ``failed`` | ``skipped``,
  with the latest attempt's log, keys, bytes and seconds; read it with
  :func:`read_delivery_statuses`.
"""

from __future__ import annotations

from ..persistence import StoredStatus, read_delivery_statuses
from ._app import BROKER_URL_ENV, TASK_NAME, FanOut, create_celery, deliver_to_destination, fan_out
from ._message import FileRef, ReferenceUnavailable, ResultSetRef

__all__ = [
    "BROKER_URL_ENV",
    "TASK_NAME",
    "FanOut",
    "FileRef",
    "ReferenceUnavailable",
    "ResultSetRef",
    "StoredStatus",
    "create_celery",
    "deliver_to_destination",
    "fan_out",
    "read_delivery_statuses",
]
