"""Owners and roles: models and jobs record the API key that created them, keys get a role,
models keep their bytes' sha256 apart from their id, jobs get a ``kind`` column, and JSON
written with NaN / Infinity tokens is rewritten as valid JSON (null).

Rows from before this revision have no owner: only admin keys see them on a server that
requires keys (every caller sees everything on one that does not).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import json
import math
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BAD_TOKENS = ("NaN", "Infinity")


def upgrade() -> None:
    # plain ADD COLUMN (no table rebuild: on SQLite with foreign keys on, rebuilding models
    # or jobs would cascade-delete their jobs and certificates)
    op.add_column("api_keys", sa.Column("role", sa.String(16), nullable=False,
                                        server_default="user"))
    op.add_column("models", sa.Column("owner", sa.String(32), nullable=True))
    op.add_column("models", sa.Column("sha256", sa.String(64), nullable=False,
                                      server_default=""))
    op.execute("UPDATE models SET sha256 = id")
    op.create_index("ix_models_owner", "models", ["owner"])
    op.create_index("ix_models_sha256", "models", ["sha256"])
    op.add_column("jobs", sa.Column("owner", sa.String(32), nullable=True))
    op.add_column("jobs", sa.Column("kind", sa.String(16), nullable=False,
                                    server_default="verify"))
    op.create_index("ix_jobs_owner", "jobs", ["owner"])
    op.create_index("ix_jobs_kind", "jobs", ["kind"])
    _fill_kinds()
    _rewrite_bad_json()


def _loads(raw: Any) -> Any:
    """A stored JSON value: text (SQLite) is parsed leniently (NaN tokens included)."""
    return json.loads(raw) if isinstance(raw, str | bytes) else raw


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _fill_kinds() -> None:
    """``kind`` from the options of the jobs stored before the column (read in Python: a
    row with NaN tokens must not stop the migration)."""
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, options FROM jobs")).all()
    for job_id, raw in rows:
        try:
            kind = (_loads(raw) or {}).get("kind") or "verify"
        except (ValueError, AttributeError):
            kind = "verify"
        if kind != "verify":
            conn.execute(sa.text("UPDATE jobs SET kind = :kind WHERE id = :id"),
                         {"kind": str(kind)[:16], "id": job_id})


def _rewrite_bad_json() -> None:
    """Rows whose JSON holds NaN or Infinity tokens (SQLite stored them as given) are
    written back with null in their place."""
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL never accepted such a value
    for table, columns in (("jobs", ("options", "progress", "result")),
                           ("certificates", ("body",))):
        for column in columns:
            where = " OR ".join(f"{column} LIKE '%{t}%'" for t in BAD_TOKENS)
            rows = conn.execute(sa.text(f"SELECT id, {column} FROM {table} WHERE {where}"))
            for row_id, raw in rows.all():
                try:
                    fixed = json.dumps(_finite(_loads(raw)))
                except ValueError:
                    fixed = "null" if column != "options" and column != "body" else "{}"
                conn.execute(sa.text(f"UPDATE {table} SET {column} = :v WHERE id = :id"),
                             {"v": fixed, "id": row_id})


def downgrade() -> None:
    """Back to 0001 (ALTER TABLE DROP COLUMN: SQLite 3.35 or later); models uploaded
    with a key keep their per-key ids."""
    op.drop_index("ix_jobs_kind", "jobs")
    op.drop_index("ix_jobs_owner", "jobs")
    op.drop_column("jobs", "kind")
    op.drop_column("jobs", "owner")
    op.drop_index("ix_models_sha256", "models")
    op.drop_index("ix_models_owner", "models")
    op.drop_column("models", "sha256")
    op.drop_column("models", "owner")
    op.drop_column("api_keys", "role")
