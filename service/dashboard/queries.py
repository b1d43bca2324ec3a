"""The overview's reads: counts per verdict, the model x property matrix and one page of
jobs, each one query over the filtered jobs (the overview of 1,000 jobs stays fast)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from ..keys import LOCAL_USER, Caller
from ..lipschitz_jobs import REGION_FORMAT
from ..services import owned_by
from ..tables import Job, ModelRecord, PropertyRecord

# what a job shows as its "verdict": the engine's verdict once it succeeded, else its state
# ("bounded": a Lipschitz job's bracket of the constant; see service/lipschitz_jobs.py)
OUTCOMES = ("verified", "falsified", "unknown", "timeout", "bounded", "running", "queued",
            "failed", "cancelled")
STATE_OUTCOMES = ("queued", "running", "failed", "cancelled")
PAGE_SIZE = 50
MAX_PAGE = 1_000_000  # a larger page number is read as the last page
MAX_MODELS_SHOWN = 500
MAX_MATRIX_COLUMNS = 40
MAX_MATRIX_JOBS = 5000  # the matrix reads at most this many newest jobs (the page stays fast)
LABEL_PREFIX_CHARS = 400


def outcome(state: str, verdict: str | None) -> str:
    if state == "succeeded":
        return verdict or "unknown"
    return state


def outcome_clause(name: str) -> ColumnElement[bool]:
    if name in STATE_OUTCOMES:
        return Job.state == name
    return and_(Job.state == "succeeded", Job.verdict == name)


@dataclass
class Filters:
    """The overview's query parameters, checked; ``errors`` says what was ignored and why.
    ``caller``: whose jobs are shown (the service layer's ownership rule)."""

    model: str | None = None
    verdict: str | None = None
    since: date | None = None
    until: date | None = None
    page: int = 1
    errors: list[str] = field(default_factory=list)
    caller: Caller = LOCAL_USER

    @classmethod
    def parse(cls, model: str | None, verdict: str | None, since: str | None,
              until: str | None, page: int, caller: Caller) -> Filters:
        f = cls(model=model or None, page=max(1, min(page, MAX_PAGE)), caller=caller)
        if verdict:
            if verdict in OUTCOMES:
                f.verdict = verdict
            else:
                f.errors.append(f"verdict {verdict!r} is not one of {', '.join(OUTCOMES)}")
        f.since = f._date("since", since)
        f.until = f._date("until", until)
        return f

    def _date(self, name: str, text: str | None) -> date | None:
        if not text:
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            self.errors.append(f"{name} {text!r} is not a date (YYYY-MM-DD)")
            return None

    def clauses(self, with_verdict: bool = True) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = owned_by(Job.owner, self.caller)
        if self.model:
            out.append(Job.model_id == self.model)
        if with_verdict and self.verdict:
            out.append(outcome_clause(self.verdict))
        if self.since:
            out.append(Job.created_at >= datetime.combine(self.since, time(), UTC))
        if self.until:
            end = datetime.combine(self.until + timedelta(days=1), time(), UTC)
            out.append(Job.created_at < end)
        return out

    def query_args(self, **override: Any) -> dict[str, Any]:
        """The filters as query parameters (for paging links), with ``override`` applied."""
        args = {"model": self.model, "verdict": self.verdict,
                "since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None, "page": self.page}
        args.update(override)
        return {k: v for k, v in args.items() if v not in (None, "")}


def verdict_counts(session: Session, filters: Filters) -> dict[str, int]:
    """Jobs per outcome under the model and date filters (not the verdict filter)."""
    rows = session.execute(select(Job.state, Job.verdict, func.count())
                           .where(*filters.clauses(with_verdict=False))
                           .group_by(Job.state, Job.verdict)).all()
    counts = dict.fromkeys(OUTCOMES, 0)
    for state, verdict, n in rows:
        name = outcome(state, verdict)
        counts[name] = counts.get(name, 0) + n
    return counts


def model_names(session: Session, caller: Caller) -> dict[str, str]:
    rows = session.execute(select(ModelRecord.id, ModelRecord.filename)
                           .where(*owned_by(ModelRecord.owner, caller))
                           .order_by(ModelRecord.created_at.desc())
                           .limit(MAX_MODELS_SHOWN)).all()
    return {mid: name or mid[:12] for mid, name in rows}


@dataclass
class Matrix:
    """Rows are models, columns properties; a cell is the newest job of that pair."""

    models: list[str]
    properties: list[str]
    cells: dict[tuple[str, str], dict[str, Any]]
    labels: dict[str, str]
    hidden_columns: int
    truncated: bool  # older jobs than the newest MAX_MATRIX_JOBS were not read


def verdict_matrix(session: Session, filters: Filters) -> Matrix:
    """Verifications only: a Lipschitz job bounds a constant, it proves no property."""
    rows = session.execute(select(Job.id, Job.model_id, Job.property_id, Job.state,
                                  Job.verdict, Job.created_at)
                           .where(*filters.clauses(), Job.kind == "verify")
                           .order_by(Job.created_at.desc(), Job.id)
                           .limit(MAX_MATRIX_JOBS)).all()
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    models: dict[str, None] = {}
    props: dict[str, None] = {}
    for job_id, model_id, prop_id, state, verdict, created in rows:
        models.setdefault(model_id)
        props.setdefault(prop_id)
        cells.setdefault((model_id, prop_id), {"job": job_id, "created_at": created,
                                               "outcome": outcome(state, verdict)})
    columns = list(props)[:MAX_MATRIX_COLUMNS]
    return Matrix(models=list(models), properties=columns, cells=cells,
                  labels=property_labels(session, columns),
                  hidden_columns=max(0, len(props) - len(columns)),
                  truncated=len(rows) == MAX_MATRIX_JOBS)


def property_labels(session: Session, ids: list[str]) -> dict[str, str]:
    """A short readable name per property, from the start of its text only."""
    if not ids:
        return {}
    rows = session.execute(select(PropertyRecord.id, PropertyRecord.format,
                                  func.substr(PropertyRecord.text, 1, LABEL_PREFIX_CHARS))
                           .where(PropertyRecord.id.in_(ids))).all()
    return {pid: property_label(pid, fmt, head) for pid, fmt, head in rows}


def property_label(prop_id: str, fmt: str, head: str) -> str:
    short = prop_id[:8]
    if fmt == REGION_FORMAT:
        shape = "centre" if head.startswith('{"center"') else "box"
        return f"region {shape} ({short})"
    if fmt == "json":
        try:
            obj = json.loads(head)
        except ValueError:
            return f"json {short}"
        if isinstance(obj, dict) and obj.get("kind") == "robustness":
            return f"robust {obj.get('label')} eps {obj.get('epsilon')} ({short})"
        return f"json {short}"
    for line in head.splitlines():
        text = line.strip().lstrip(";").strip()
        if line.strip().startswith(";") and text:
            return f"{text[:40]} ({short})"
    return f"vnnlib {short}"


@dataclass
class JobPage:
    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    labels: dict[str, str]  # property id -> short readable name


def job_page(session: Session, filters: Filters, model: str | None = None,
             page_size: int = PAGE_SIZE) -> JobPage:
    """One page of jobs, newest first, under the filters."""
    clauses = filters.clauses() + ([Job.model_id == model] if model else [])
    total = session.scalar(select(func.count()).select_from(Job).where(*clauses)) or 0
    pages = max(1, -(-total // page_size))
    page = min(filters.page, pages)
    query = (select(Job.id, Job.model_id, Job.property_id, Job.state, Job.verdict,
                                 Job.created_at, Job.seconds, Job.message,
                                 Job.kind)
                          .where(*clauses).order_by(Job.created_at.desc(), Job.id)
                          .limit(page_size).offset((page - 1) * page_size))
    rows = [dict(r._mapping, outcome=outcome(r.state, r.verdict))
            for r in session.execute(query)]
    labels = property_labels(session, sorted({r["property_id"] for r in rows}))
    return JobPage(rows=rows, total=total, page=page, pages=pages, labels=labels)


LIPSCHITZ_ROWS = 10


def lipschitz_jobs(session: Session, filters: Filters,
                   limit: int = LIPSCHITZ_ROWS) -> list[dict[str, Any]]:
    """The newest Lipschitz jobs under the filters, with their brackets (read from each
    result in Python: no SQL JSON function runs over the stored results, so one row with
    a value it calls malformed cannot fail the page)."""
    query = (select(Job.id, Job.model_id, Job.state, Job.verdict, Job.created_at, Job.result)
             .where(*filters.clauses(), Job.kind == "lipschitz")
             .order_by(Job.created_at.desc(), Job.id).limit(limit))
    rows = []
    for r in session.execute(query):
        result = r.result if isinstance(r.result, dict) else {}
        rows.append({"id": r.id, "model_id": r.model_id, "state": r.state,
                     "verdict": r.verdict, "created_at": r.created_at,
                     "outcome": outcome(r.state, r.verdict),
                     **{k: _number(result.get(k)) for k in ("lower", "upper", "naive")},
                     "norm": str(result.get("norm") or "") or None})
    return rows


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
