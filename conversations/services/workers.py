"""This server process as the database knows it: its id, heartbeat and channel."""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from conversations.models import Worker

#: Identifies this process on replies it runs (host:pid:start).
WORKER_ID = f"{socket.gethostname()[:30]}:{os.getpid()}:{int(time.time())}"


def worker_heartbeat(*, channel: str) -> None:
    """Record that this process is alive and where to reach it."""
    Worker.objects.update_or_create(
        pk=WORKER_ID, defaults={"channel": channel, "heartbeat_at": timezone.now()}
    )


def worker_channel(*, worker_id: str) -> str | None:
    """The channel of a live worker, or None if it is unknown or stale."""
    fresh_after = timezone.now() - timedelta(seconds=settings.CHATSITE_WORKER_STALE)
    worker = Worker.objects.filter(pk=worker_id, heartbeat_at__gte=fresh_after).first()
    return worker.channel if worker is not None and worker.channel else None


def _pid_alive_here(worker: str) -> bool | None:
    """For a worker of this host: is its process alive? None for other hosts."""
    parts = worker.split(":")
    if len(parts) != 3 or parts[0] != WORKER_ID.split(":", 1)[0]:
        return None
    try:
        pid = int(parts[1])
    except ValueError:
        return None
    if pid == os.getpid():
        # Our pid under another start time: a previous life of this container.
        return worker == WORKER_ID
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def workers_dead(*, worker_ids: set[str]) -> set[str]:
    """Those of ``worker_ids`` whose process is dead: on this host with its pid
    gone, or with a heartbeat older than ``CHATSITE_WORKER_STALE``."""
    fresh_after = timezone.now() - timedelta(seconds=settings.CHATSITE_WORKER_STALE)
    alive = set(
        Worker.objects.filter(pk__in=worker_ids, heartbeat_at__gte=fresh_after).values_list("pk", flat=True)
    )
    dead = set()
    for worker in worker_ids:
        here = _pid_alive_here(worker)
        if here is False or (here is None and worker not in alive):
            dead.add(worker)
    return dead
