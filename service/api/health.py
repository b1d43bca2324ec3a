"""/health: is the database reachable, is the queue reachable, how many workers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import text

from .deps import QueueDep, SessionDep
from .schemas import Health

router = APIRouter(tags=["health"])


def _database(session: SessionDep) -> dict[str, Any]:
    try:
        session.execute(text("SELECT 1"))
    except Exception as exc:
        return {"ok": False, "detail": f"database unreachable: {exc}"}
    return {"ok": True, "dialect": session.get_bind().dialect.name}


@router.get("/health", response_model=Health)
def health(response: Response, session: SessionDep, queue: QueueDep) -> Health:
    database, queue_state = _database(session), queue.health()
    ok = database["ok"] and queue_state["ok"]
    response.status_code = 200 if ok else 503
    return Health(status="ok" if ok else "degraded", database=database, queue=queue_state,
                  workers=int(queue_state.get("workers", 0)))
