"""Certificate proofs (issue 17): a certificate records what became of the proof of its
verified result (status, reason, leaves, size, search and check seconds, the checker's
format version) and keeps the proof file the checker accepted.

Certificates from before this revision have no proof: status ``none``, reason "issued
before proofs were kept".

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = ("proof_status", "proof_reason", "proof_leaves", "proof_size_bytes",
           "proof_search_seconds", "proof_check_seconds", "proof_checker", "proof_data")


def upgrade() -> None:
    # plain ADD COLUMN (no table rebuild: on SQLite with foreign keys on, rebuilding a
    # table would cascade-delete what refers to it)
    op.add_column("certificates", sa.Column("proof_status", sa.String(16), nullable=False,
                                            server_default="none"))
    op.add_column("certificates", sa.Column("proof_reason", sa.Text(), nullable=False,
                                            server_default=""))
    op.add_column("certificates", sa.Column("proof_leaves", sa.Integer(), nullable=True))
    op.add_column("certificates", sa.Column("proof_size_bytes", sa.Integer(), nullable=True))
    op.add_column("certificates", sa.Column("proof_search_seconds", sa.Float(), nullable=True))
    op.add_column("certificates", sa.Column("proof_check_seconds", sa.Float(), nullable=True))
    op.add_column("certificates", sa.Column("proof_checker", sa.String(32), nullable=True))
    op.add_column("certificates", sa.Column("proof_data", sa.LargeBinary(), nullable=True))
    op.execute("UPDATE certificates SET proof_reason = 'issued before proofs were kept'")


def downgrade() -> None:
    """Back to 0002 (ALTER TABLE DROP COLUMN: SQLite 3.35 or later); the proofs are lost,
    the certificates kept."""
    for column in reversed(COLUMNS):
        op.drop_column("certificates", column)
