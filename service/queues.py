"""Job queues: where a committed job is sent to be run.

``LocalPool`` is the embedded default, a spawn-context process pool inside ``nnverify
serve``; ``CeleryQueue`` sends the job id to Redis for ``nnverify worker`` processes.  Both
run ``service.worker.run_job``.  Callers enqueue only after the job's row has committed.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any, Protocol

from .settings import ServiceSettings
from .worker import run_job


class JobQueue(Protocol):
    def enqueue(self, job_id: str) -> None: ...

    def health(self) -> dict[str, Any]: ...

    def shutdown(self) -> None: ...


def _warm_up() -> str:
    return "ready"  # importing this module in the worker imported the engine


def _init_worker(nice: int, threads: int) -> None:
    """In each pool process: a lower CPU priority than the API's, no more torch threads than
    its share of the cores (more would only contend with the other workers), and a watchdog
    that ends the process when the server is gone (its job stays running in the database
    and is queued again when the server starts)."""
    import torch

    if nice and hasattr(os, "nice"):
        os.nice(nice)
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _run_in_pool(job_id: str, settings: ServiceSettings) -> str:
    return run_job(job_id, settings)


class LocalPool:
    """A pool of worker processes started with the server and stopped with it.

    If a worker process dies (killed, out of memory) the pool breaks; it is then replaced and
    the jobs it was running are submitted again (``run_job`` starts a new attempt, and gives
    up after ``max_attempts``).
    """

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.size = settings.local_workers
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            max_workers=self.size, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.settings.worker_nice, self.settings.threads_per_worker))
        for _ in range(self.size):  # start the processes and import the engine now
            pool.submit(_warm_up).add_done_callback(_ignore_result)
        return pool

    def enqueue(self, job_id: str) -> None:
        with self._lock:
            pool = self._pool
            try:
                future = pool.submit(_run_in_pool, job_id, self.settings)
            except BrokenProcessPool:
                pool = self._replace(pool)
                future = pool.submit(_run_in_pool, job_id, self.settings)
        future.add_done_callback(partial(self._done, job_id, pool))

    def _replace(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        """A fresh pool in place of ``broken`` (once, however many jobs notice); call with
        the lock held."""
        if self._pool is broken:
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
        return self._pool

    def _done(self, job_id: str, pool: ProcessPoolExecutor, future: Future[str]) -> None:
        if future.cancelled() or not isinstance(future.exception(), BrokenProcessPool):
            return  # anything else is already recorded on the job by run_job
        with self._lock:
            self._replace(pool)
        self.enqueue(job_id)

    def health(self) -> dict[str, Any]:
        return {"ok": True, "backend": "local", "workers": self.size}

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _ignore_result(future: Future[str]) -> None:
    if not future.cancelled():
        future.exception()


class CeleryQueue:
    """Sends job ids to Celery workers through Redis."""

    def __init__(self, settings: ServiceSettings):
        from .celery_app import make_celery

        self.settings = settings
        self.app = make_celery(settings)

    def enqueue(self, job_id: str) -> None:
        from .celery_app import TASK_NAME

        self.app.send_task(TASK_NAME, args=[job_id], queue=self.settings.celery_queue)

    def health(self) -> dict[str, Any]:
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=1)
            replies = self.app.control.ping(timeout=0.5) or []
        except Exception as exc:
            return {"ok": False, "backend": "celery", "workers": 0,
                    "detail": f"broker unreachable: {exc}"}
        return {"ok": True, "backend": "celery", "workers": len(replies)}

    def shutdown(self) -> None:
        self.app.close()


def make_queue(settings: ServiceSettings) -> JobQueue:
    if settings.worker_backend == "celery":
        return CeleryQueue(settings)
    return LocalPool(settings)
