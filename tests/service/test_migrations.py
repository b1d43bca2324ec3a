"""Alembic migrations: upgrade from an empty database, downgrade/upgrade round trip, the
migrated schema matches the table classes, and upgrades from 0001 and 0002 keep every row
(SQLite, and PostgreSQL when it is running)."""

from __future__ import annotations

import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from service import migrate
from service.db import make_engine
from service.tables import Base

TABLES = {"models", "properties", "jobs", "certificates", "api_keys"}


def tables_of(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def schema_differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()


HEAD = "0003"


def check_round_trip(settings) -> None:
    url = settings.sqlalchemy_url
    migrate.upgrade(settings)
    assert migrate.current(settings) == HEAD
    assert tables_of(url) == TABLES
    assert schema_differences(url) == []
    migrate.downgrade(settings, "base")
    assert migrate.current(settings) is None
    assert tables_of(url) == set()
    migrate.upgrade(settings)
    assert tables_of(url) == TABLES


def test_sqlite_upgrade_downgrade_round_trip(settings):
    check_round_trip(settings)


def test_sqlite_uses_wal(settings):
    migrate.upgrade(settings)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


def test_cli_db_upgrade(tmp_path, monkeypatch, capsys):
    from service.cli import main

    monkeypatch.setenv("NNVERIFY_DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "downgrade", "base"]) == 0
    assert main(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    assert f"revision {HEAD}" in out and "revision None" in out


def test_postgres_upgrade_downgrade_round_trip(settings):
    from service_testkit import fresh_postgres_database

    with fresh_postgres_database() as url:
        check_round_trip(settings.model_copy(update={"database_url": url}))


@pytest.mark.parametrize("url,expected", [
    ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
    ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
])
def test_database_url_normalised(monkeypatch, url, expected):
    from service.settings import ServiceSettings

    monkeypatch.setenv("DATABASE_URL", url)
    assert ServiceSettings().sqlalchemy_url == expected


SHA = "ab" * 32
ROWS_0001 = [
    "INSERT INTO models (id, filename, size_bytes, onnx_bytes, summary, created_at) VALUES "
    "('{sha}', 'm.onnx', 3, :blob, '{{}}', '2026-01-01 00:00:00')",
    "INSERT INTO properties (id, format, text, created_at) VALUES "
    "('p1', 'vnnlib', '(assert true)', '2026-01-01 00:00:00')",
    "INSERT INTO jobs (id, model_id, property_id, state, options, result, message, "
    "cancel_requested, attempts, created_at) VALUES ('j1', '{sha}', 'p1', 'succeeded', "
    "'{{\"timeout\": 60, \"kind\": \"lipschitz\"}}', :result, '', false, 1, "
    "'2026-01-01 00:00:00')",
    "INSERT INTO jobs (id, model_id, property_id, state, options, message, cancel_requested, "
    "attempts, created_at) VALUES ('j2', '{sha}', 'p1', 'queued', '{{\"timeout\": 60}}', '', "
    "false, 0, '2026-01-01 00:00:00')",
    "INSERT INTO certificates (id, job_id, model_id, verdict, body, created_at) VALUES "
    "('c1', 'j1', '{sha}', 'bounded', '{{}}', '2026-01-01 00:00:00')",
]


def check_upgrade_keeps_rows(settings, result: str) -> None:
    """0001 -> head with rows in every table: nothing is lost (no cascade), the new
    columns are filled, and a result written with NaN tokens becomes valid JSON."""
    migrate.upgrade(settings, "0001")
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with engine.begin() as conn:
            for sql in ROWS_0001:
                conn.execute(text(sql.format(sha=SHA)), {"blob": b"abc", "result": result})
        migrate.upgrade(settings)
        with engine.connect() as conn:
            models = conn.execute(text("SELECT id, sha256, owner FROM models")).all()
            jobs = conn.execute(text("SELECT id, kind, owner FROM jobs ORDER BY id")).all()
            certs = conn.execute(text("SELECT id FROM certificates")).all()
            role = conn.execute(text("SELECT count(*) FROM api_keys")).scalar()
            stored = conn.execute(text("SELECT result FROM jobs WHERE id = 'j1'")).scalar()
    finally:
        engine.dispose()
    assert [tuple(r) for r in models] == [(SHA, SHA, None)]
    assert [tuple(r) for r in jobs] == [("j1", "lipschitz", None), ("j2", "verify", None)]
    assert [tuple(r) for r in certs] == [("c1",)] and role == 0
    value = stored if isinstance(stored, dict) else json.loads(stored, parse_constant=_refuse)
    assert value == {"lower": 1.0, "upper": None, "naive": None}
    migrate.downgrade(settings, "0001")
    assert tables_of(settings.sqlalchemy_url) == TABLES


def _refuse(token: str) -> None:
    raise AssertionError(f"{token} is not JSON")


def test_sqlite_upgrade_from_0001_keeps_rows_and_cleans_nan(settings):
    check_upgrade_keeps_rows(settings, '{"lower": 1.0, "upper": NaN, "naive": Infinity}')


def test_postgres_upgrade_from_0001_keeps_rows(settings):
    from service_testkit import fresh_postgres_database

    with fresh_postgres_database() as url:  # PostgreSQL refuses NaN tokens: null already
        check_upgrade_keeps_rows(settings.model_copy(update={"database_url": url}),
                                 '{"lower": 1.0, "upper": null, "naive": null}')


ROWS_0002 = [
    "INSERT INTO models (id, sha256, filename, size_bytes, onnx_bytes, summary, created_at) "
    "VALUES ('{sha}', '{sha}', 'm.onnx', 3, :blob, '{{}}', '2026-01-01 00:00:00')",
    "INSERT INTO properties (id, format, text, created_at) VALUES "
    "('p1', 'vnnlib', '(assert true)', '2026-01-01 00:00:00')",
    "INSERT INTO jobs (id, model_id, property_id, kind, state, options, message, "
    "cancel_requested, attempts, created_at) VALUES ('j1', '{sha}', 'p1', 'verify', "
    "'succeeded', '{{\"timeout\": 60}}', '', false, 1, '2026-01-01 00:00:00')",
    "INSERT INTO certificates (id, job_id, model_id, verdict, body, created_at) VALUES "
    "('c1', 'j1', '{sha}', 'verified', '{{}}', '2026-01-01 00:00:00')",
]


def check_upgrade_from_0002(settings) -> None:
    """0002 -> head with a certificate: it is kept, with proof status ``none`` and the
    reason; back to 0002 it is still there."""
    migrate.upgrade(settings, "0002")
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with engine.begin() as conn:
            for sql in ROWS_0002:
                conn.execute(text(sql.format(sha=SHA)), {"blob": b"abc"})
        migrate.upgrade(settings)
        with engine.connect() as conn:
            proof = conn.execute(text(
                "SELECT id, proof_status, proof_reason, proof_data FROM certificates")).all()
        migrate.downgrade(settings, "0002")
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT id, verdict FROM certificates")).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in proof] == [("c1", "none", "issued before proofs were kept",
                                          None)]
    assert [tuple(r) for r in kept] == [("c1", "verified")]
    assert migrate.current(settings) == "0002"


def test_sqlite_upgrade_from_0002_adds_proof_columns(settings):
    check_upgrade_from_0002(settings)


def test_postgres_upgrade_from_0002_adds_proof_columns(settings):
    from service_testkit import fresh_postgres_database

    with fresh_postgres_database() as url:
        check_upgrade_from_0002(settings.model_copy(update={"database_url": url}))
