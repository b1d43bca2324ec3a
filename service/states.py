"""The job state machine: every change of ``Job.state`` goes through ``transition``.

    queued ──> running ──> succeeded | failed | cancelled
      │          │ └──> running   (delivered again: a new attempt takes over)
      │          └────> queued    (its worker vanished; re-queued at start-up)
      └──> cancelled | failed

A finished job (succeeded, failed, cancelled) never changes again.  ``transition`` updates
the row only if it is still in the state the caller saw (and, for a worker, still on the
attempt that worker started), so two processes racing on one job cannot both win.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from .tables import Job, utcnow

ALLOWED: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled", "failed"}),
    "running": frozenset({"running", "queued", "succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
FINISHED = frozenset({"succeeded", "failed", "cancelled"})


class TransitionError(Exception):
    """The job was not in a state from which the requested change is allowed."""


def transition(session: Session, job_id: str, source: str, target: str,
               attempt: int | None = None, **fields: Any) -> bool:
    """Move job ``job_id`` from ``source`` to ``target`` and set ``fields``, atomically.

    Returns False (and changes nothing) when the job is no longer in ``source`` or, with
    ``attempt`` given, no longer on that attempt.  Raises TransitionError for a change the
    state machine forbids.
    """
    if target not in ALLOWED.get(source, frozenset()):
        raise TransitionError(f"a job cannot go from {source!r} to {target!r}")
    values = dict(fields, state=target)
    if target in FINISHED:
        values.setdefault("finished_at", utcnow())
    stmt = update(Job).where(Job.id == job_id, Job.state == source)
    if attempt is not None:
        stmt = stmt.where(Job.attempts == attempt)
    done = session.execute(stmt.values(**values).execution_options(synchronize_session=False))
    return done.rowcount == 1  # type: ignore[attr-defined]
