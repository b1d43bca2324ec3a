"""Job queues: where a committed job is sent to be run.

``LocalPool`` is the embedded default, worker processes inside ``nnverify serve``;
``CeleryQueue`` sends the job to Redis for ``nnverify worker`` processes.  Both run
``service.worker.run_job``.  Callers enqueue only after the job's row has committed.

A message is ``(job_id, token)``: the token is the job's attempt count when it was sent
(None: whichever), so a copy of an old message cannot claim a job re-queued since
(``service.worker.claim``).  ``in_flight`` tells the reconciler which messages the queue
still holds, so that it re-sends only the jobs whose message was lost.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
from collections import Counter
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from .settings import ServiceSettings
from .worker import run_job, worker_name

log = logging.getLogger(__name__)

Message = tuple[str, int | None]  # (job id, token)


class JobQueue(Protocol):
    def enqueue(self, job_id: str, token: int | None = None) -> None: ...

    def health(self) -> dict[str, Any]: ...

    def shutdown(self) -> None: ...


def in_flight(queue: Any) -> set[Message] | None:
    """The messages ``queue`` holds (waiting or being run), or None when it cannot tell."""
    method = getattr(queue, "in_flight", None)
    return method() if callable(method) else None


def reachable(queue: Any) -> dict[str, Any]:
    """Whether jobs can be sent to ``queue`` now (readiness), without asking its workers."""
    method = getattr(queue, "reachable", None)
    return method() if callable(method) else queue.health()  # type: ignore[no-any-return]


# -- the local pool ---------------------------------------------------------------------
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


def _serve_jobs(conn: Connection, nice: int, threads: int) -> None:
    """A pool process: run each job its slot sends, answer with the job's state.  It
    ignores SIGINT and SIGTERM sent to the whole process group (Ctrl-C, systemd): the
    server ends it, and hands its job back, when the server itself stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _init_worker(nice, threads)
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        job_id, token, settings = message
        try:
            state = run_job(job_id, settings, token=token)
        except Exception as exc:  # the database is down, say: the reconciler re-sends
            state = f"error: {type(exc).__name__}: {exc}"
        conn.send(state)


def _ended(process: BaseProcess, timeout: float = 5.0) -> bool:
    """Wait until ``process`` has ended; whether it has.  By its sentinel, not ``join``: the
    slot's thread and the server's shutdown may both wait for one process, and a ``join``
    that loses the race to reap it reports the ended process as alive."""
    return bool(wait([process.sentinel], timeout))


class _Slot:
    """One worker process and the thread of the server that feeds it one job at a time.

    When the process dies mid-job only its own job is affected: it is re-queued at once
    (``service.recovery.requeue_worker``) and a fresh process takes the slot's next job.
    """

    def __init__(self, pool: LocalPool, index: int):
        self.pool, self.index = pool, index
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self._start_process()
        self.thread = threading.Thread(target=self._serve, name=f"pool-slot-{index}",
                                       daemon=True)
        self.thread.start()

    def _start_process(self) -> None:
        settings = self.pool.settings
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(target=_serve_jobs, name=f"nnverify-worker-{self.index}",
                                  args=(child, settings.worker_nice,
                                        settings.threads_per_worker), daemon=True)
        process.start()
        child.close()
        self.process, self.conn = process, parent

    def _serve(self) -> None:
        while True:
            message = self.pool.jobs.get()
            if message is None:
                return
            try:
                self._run(message)
            except Exception:  # keep the slot alive; the reconciler re-sends the job
                log.exception("pool slot failed to run a job", extra={"job_id": message[0]})
            finally:
                self.pool.release(message)

    def _run(self, message: Message) -> None:
        assert self.process is not None and self.conn is not None
        if not self.process.is_alive():
            self._start_process()
        assert self.process is not None and self.conn is not None
        self.conn.send((*message, self.pool.settings))
        while True:
            ready = wait([self.conn, self.process.sentinel])
            if self.conn in ready:
                try:
                    if self.conn.recv() != "ready":
                        return  # the job's state: done
                    continue  # the start-up greeting
                except EOFError:
                    pass
            self._lost(message)
            return

    def _lost(self, message: Message) -> None:
        """The process died while running ``message``: re-queue its job now, new process."""
        from .recovery import requeue_worker

        assert self.process is not None
        _ended(self.process)
        dead = worker_name(self.process.pid or 0)
        log.warning("pool process %s died (exit status %s)", dead, self.process.exitcode,
                    extra={"job_id": message[0]})
        if not self.pool.closing.is_set():
            requeue_worker(self.pool.settings, dead, self.pool, "its worker process died")
            self._start_process()

    def stop(self) -> int | None:
        """End the process; its pid, when it ended (None if it would not)."""
        if self.process is None:
            return None
        self.process.kill()  # its job is handed back: nothing in it needs to be saved
        return self.process.pid if _ended(self.process) else None


class LocalPool:
    """Worker processes started with the server and stopped with it, one job each at a time.

    At shutdown the processes are ended and the jobs they were running are handed back to
    the queue without counting an attempt (``service.recovery.give_back``): a restart is not
    a failure of the job.
    """

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.size = settings.local_workers
        self.jobs: queue_module.Queue[Message | None] = queue_module.Queue()
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._held: Counter[Message] = Counter()
        self._slots = [_Slot(self, i) for i in range(self.size)]

    def enqueue(self, job_id: str, token: int | None = None) -> None:
        with self._lock:
            self._held[(job_id, token)] += 1
        self.jobs.put((job_id, token))

    def release(self, message: Message) -> None:
        """A slot is done with ``message`` (run, dropped, or its process died)."""
        with self._lock:
            self._held[message] -= 1
            if self._held[message] <= 0:
                del self._held[message]

    def in_flight(self) -> set[Message]:
        with self._lock:
            return set(self._held)

    def health(self) -> dict[str, Any]:
        return {"ok": True, "backend": "local", "workers": self.size}

    def reachable(self) -> dict[str, Any]:
        ok = not self.closing.is_set()
        return {"ok": ok, "backend": "local", "workers": self.size}

    def shutdown(self) -> None:
        from .recovery import give_back

        self.closing.set()
        for _ in self._slots:
            self.jobs.put(None)
        for slot in self._slots:
            pid = slot.stop()
            if pid is not None:
                try:
                    give_back(self.settings, worker_name(pid))
                except Exception:  # the next start re-queues the job anyway
                    log.exception("could not hand back the jobs of %s", worker_name(pid))


# -- Celery on Redis --------------------------------------------------------------------
class CeleryQueue:
    """Sends job messages to Celery workers through Redis."""

    def __init__(self, settings: ServiceSettings):
        from .celery_app import make_celery

        self.settings = settings
        self.app = make_celery(settings)
        self._redis: Any = None

    def enqueue(self, job_id: str, token: int | None = None) -> None:
        from .celery_app import TASK_NAME

        self.app.send_task(TASK_NAME, args=[job_id, token], queue=self.settings.celery_queue)

    def health(self) -> dict[str, Any]:
        state = self.reachable()
        if not state["ok"]:
            return dict(state, workers=0)
        try:
            replies = self.app.control.ping(timeout=0.5) or []
        except Exception as exc:
            return {"ok": False, "backend": "celery", "workers": 0,
                    "detail": f"broker unreachable: {exc}"}
        return {"ok": True, "backend": "celery", "workers": len(replies)}

    def reachable(self) -> dict[str, Any]:
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=1)
        except Exception as exc:
            return {"ok": False, "backend": "celery", "detail": f"broker unreachable: {exc}"}
        return {"ok": True, "backend": "celery"}

    def in_flight(self) -> set[Message]:
        """The messages in Redis for this queue: waiting in its lists, or delivered to a
        worker less than ``job_lease_seconds`` ago and not yet acknowledged (a worker claims
        a job within a second of delivery; one still unclaimed after that died first)."""
        name = self.settings.celery_queue
        fresh = time.time() - self.settings.job_lease_seconds
        with self._client().pipeline(transaction=True) as pipe:  # one snapshot: a message
            for list_name in redis_list_names(name):  # moving between a list and the
                pipe.lrange(list_name, 0, -1)  # unacknowledged hash is seen in one of them
            pipe.zrangebyscore("unacked_index", fresh, "+inf")
            pipe.hgetall("unacked")
            *lists, delivered, unacked = pipe.execute()
        raws: list[bytes] = [raw for values in lists for raw in values]
        fresh_tags = set(delivered)
        for tag, raw in unacked.items():
            entry = json.loads(raw)
            if entry[2] == name and tag in fresh_tags:  # [message, exchange, routing key]
                raws.append(json.dumps(entry[0]).encode())
        return {m for m in (message_of(raw) for raw in raws) if m is not None}

    def _client(self) -> Any:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(self.settings.redis_url, socket_timeout=5)
        return self._redis

    def shutdown(self) -> None:
        if self._redis is not None:
            self._redis.close()
        self.app.close()


def redis_list_names(queue: str) -> list[str]:
    """The Redis lists kombu keeps for ``queue``: the queue itself and its priority steps."""
    return [queue] + [f"{queue}\x06\x16{step}" for step in (3, 6, 9)]


def message_of(raw: bytes) -> Message | None:
    """(job id, token) of a kombu message as stored in Redis; None for anything else."""
    import base64

    try:
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        token = args[1] if len(args) > 1 else None
        return str(args[0]), (int(token) if token is not None else None)
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def make_queue(settings: ServiceSettings) -> JobQueue:
    if settings.worker_backend == "celery":
        return CeleryQueue(settings)
    return LocalPool(settings)
