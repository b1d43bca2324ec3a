"""Database tables (SQLAlchemy 2).  The schema itself is created by the Alembic migrations
in ``migrations/``; these classes must match them."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")
# what a job computes (``Job.kind``; jobs stored before kinds are verifications)
JOB_KINDS = ("verify", "lipschitz")
# what became of a certificate's proof: none searched (proofs off, not a verified result),
# checked (the independent checker accepted it), rejected (it did not), unavailable (no
# proof found, or none possible: a JSON-form property, a model outside the checker's ops)
PROOF_STATUSES = ("none", "checked", "rejected", "unavailable")
# an API key's role: "admin" sees and acts on every object, "user" only on its own
KEY_ROLES = ("user", "admin")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC timestamp; SQLite returns naive values, which are UTC by construction."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def finite_json(value: Any) -> Any:
    """``value`` with every float that is not finite replaced by None.

    JSON has no NaN or infinity: Python's encoder writes bare ``NaN`` / ``Infinity`` tokens,
    which PostgreSQL refuses and SQLite's JSON functions call malformed.  So a number that
    is not finite is stored, and read back, as null: "no finite value"."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


class StrictJSON(TypeDecorator[Any]):
    """A JSON column that only ever holds valid JSON (see ``finite_json``), also when an
    older row holds NaN tokens written before this rule."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return finite_json(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return finite_json(value)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: StrictJSON, datetime: UTCDateTime}


class ModelRecord(Base):
    """An uploaded ONNX model.  Its id is the sha256 of its bytes for a model without an
    owner (uploaded without a key), else derived from the owner and the sha256
    (``service.services.model_id_for``): the same bytes give one model per key."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # the id of the API key that uploaded it; None: no key (a server without required keys)
    owner: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    filename: Mapped[str] = mapped_column(String(255), default="")
    size_bytes: Mapped[int] = mapped_column(Integer)
    onnx_bytes: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # loaded on use
    summary: Mapped[dict[str, Any]] = mapped_column(StrictJSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PropertyRecord(Base):
    """A property as submitted (VNN-LIB text or JSON), content-addressed by its sha256."""

    __tablename__ = "properties"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    format: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One verification (or Lipschitz bound) of a property on a model.  ``state`` changes
    only through ``service.states.transition``; ``options`` holds the job's specification
    (``service.jobspec.JobSpec``); its certificate has the job's owner."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    property_id: Mapped[str] = mapped_column(ForeignKey("properties.id"), index=True)
    owner: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16), default="verify", index=True)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    options: Mapped[dict[str, Any]] = mapped_column(StrictJSON)
    progress: Mapped[dict[str, Any] | None] = mapped_column(StrictJSON, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(StrictJSON, nullable=True)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    device: Mapped[str | None] = mapped_column(String(32), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)


class Certificate(Base):
    """The certificate of a finished job (DESIGN.md: The certificate)."""

    __tablename__ = "certificates"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), unique=True, index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    body: Mapped[dict[str, Any]] = mapped_column(StrictJSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # the proof of a verified result (service/proofs.py): its status (PROOF_STATUSES), why
    # there is none or why the checker refused it, and the proof file itself (kept only
    # when the checker accepted it; loaded on use, like a model's bytes)
    proof_status: Mapped[str] = mapped_column(String(16), default="none", server_default="none")
    proof_reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    proof_leaves: Mapped[int | None] = mapped_column(Integer, nullable=True)
    proof_size_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    proof_search_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    proof_check_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    proof_checker: Mapped[str | None] = mapped_column(String(32), nullable=True)
    proof_data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)


class ApiKey(Base):
    """An API key; only the sha256 of the key is stored.  Its ``role`` is one of
    KEY_ROLES."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16), default="user")
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
