"""Health: ``/health`` (database, queue and workers at a glance), ``/health/live`` (the
process answers: for a liveness probe, which restarts the process when it fails) and
``/health/ready`` (the database and the broker are reachable, so jobs can be accepted: for a
readiness probe, which only takes the process out of the load balancer; 503 otherwise)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from sqlalchemy import text

from ..queues import reachable
from .deps import QueueDep, SessionDep
from .schemas import Health

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str  # "ready" or "not ready"
    database: dict[str, Any]
    queue: dict[str, Any]
    reconciler: dict[str, Any]


def _database(session: SessionDep) -> dict[str, Any]:
    try:
        session.execute(text("SELECT 1"))
    except Exception as exc:
        return {"ok": False, "detail": f"database unreachable: {exc}"}
    return {"ok": True, "dialect": session.get_bind().dialect.name}


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(response: Response, session: SessionDep, queue: QueueDep) -> Health:
    database, queue_state = _database(session), queue.health()
    ok = database["ok"] and queue_state["ok"]
    response.status_code = 200 if ok else 503
    return Health(status="ok" if ok else "degraded", database=database, queue=queue_state,
                  workers=int(queue_state.get("workers", 0)))


@router.get("/health/live", response_model=Liveness)
async def live() -> Liveness:
    """200 while the process serves requests; checks nothing else, so that a database
    outage does not get every API process restarted."""
    return Liveness(status="alive")


@router.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
def ready(request: Request, response: Response, session: SessionDep,
          queue: QueueDep) -> Readiness:
    """200 when the database answers and the broker accepts connections (workers are not
    asked: a job may wait for one), else 503."""
    database = _database(session)
    try:
        queue_state = reachable(queue)
    except Exception as exc:
        queue_state = {"ok": False, "detail": f"queue unreachable: {exc}"}
    ok = bool(database["ok"] and queue_state["ok"])
    response.status_code = 200 if ok else 503
    return Readiness(status="ready" if ok else "not ready", database=database,
                     queue=queue_state, reconciler=_reconciler(request))


def _reconciler(request: Request) -> dict[str, Any]:
    """The reconciler's passes so far and when the last one ended (unix time)."""
    rec = getattr(request.app.state, "reconciler", None)
    if rec is None:
        return {"running": False}
    return {"running": True, "passes": rec.passes, "last_pass": rec.last_pass}
