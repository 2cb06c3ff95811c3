"""The queue's tasks (Huey). Huey delivers at most once; correctness lives in our rows."""

import threading

from django.db import close_old_connections
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task, on_startup

from batches import services


@db_task()
def batch_work(batch_id: str) -> None:
    """One worker's share of a batch: claim lines until none is left. Stopped by the key's
    batch concurrency cap, it comes back when the first lease that holds the cap runs out, in
    case the worker that holds it died (a live one has gone on meanwhile)."""
    capped = services.batch_work(batch_id=batch_id)
    if capped is not None:
        batch_work.schedule(args=(capped[0],), delay=capped[1])


@db_periodic_task(crontab(minute="*"))
def batches_tick() -> None:
    """Every minute: re-queue lines whose lease ran out, expire and finalise batches."""
    for batch_id in services.batches_tick():
        services.batch_work_enqueue(batch_id=batch_id, enqueue=batch_work)


_started = threading.Lock()


@on_startup()
def batches_resume() -> None:
    """When a consumer starts (once per process), queue work for every open batch: a consumer
    that died took its queued tasks along, its lines' leases run out and are taken over."""
    if not _started.acquire(blocking=False):
        return
    close_old_connections()
    for batch_id in services.batches_open():
        services.batch_work_enqueue(batch_id=batch_id, enqueue=batch_work)
    close_old_connections()
