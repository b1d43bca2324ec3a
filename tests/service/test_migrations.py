"""Alembic migrations: upgrade from an empty database, downgrade/upgrade round trip, and the
migrated schema matches the table classes (SQLite here; PostgreSQL in test_postgres_flow)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

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


def check_round_trip(settings) -> None:
    url = settings.sqlalchemy_url
    migrate.upgrade(settings)
    assert migrate.current(settings) == "0001"
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
    assert "revision 0001" in out and "revision None" in out


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
