"""The reconciler: a thread of the API process that repairs the queue every
``reconcile_interval`` seconds (``service.recovery.reconcile``).

A worker killed mid-job is noticed once its heartbeat is ``job_lease_seconds`` old, so its
job runs again within lease + interval (default 30 + 15 s); a queued job whose message was
lost (a Redis without persistence restarted) is sent again within two intervals.  Several
API processes may each run one: every repair is a guarded update, and a message sent twice
runs once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from .queues import JobQueue
from .recovery import Repairs, reconcile
from .settings import ServiceSettings

log = logging.getLogger(__name__)


class Reconciler:
    """Runs ``reconcile`` periodically in a daemon thread; ``on_pass`` sees each result."""

    def __init__(self, sessions: sessionmaker[Session], settings: ServiceSettings,
                 queue: JobQueue, on_pass: Callable[[Repairs], None] | None = None):
        self.sessions, self.settings, self.queue = sessions, settings, queue
        self.on_pass = on_pass
        self.passes = 0
        self.last_pass: float | None = None  # time.time() of the last pass that completed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> Repairs:
        """One pass now (in the caller's thread)."""
        repairs = reconcile(self.sessions, self.settings, self.queue)
        self.passes += 1
        self.last_pass = time.time()
        if self.on_pass is not None:
            self.on_pass(repairs)
        return repairs

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.reconcile_interval):
            try:
                self.run_once()
            except Exception as exc:  # the database or broker is down: try again next time
                log.warning("reconciliation pass failed: %s: %s", type(exc).__name__, exc)
