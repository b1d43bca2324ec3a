"""Running the Alembic migrations from code (``nnverify serve`` and ``nnverify db``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from .db import ensure_data_dir
from .settings import ServiceSettings


def migrations_dir() -> Path:
    """``migrations/`` beside the package (a checkout or an editable install), else in the
    working directory (the Docker image's /app)."""
    beside = Path(__file__).resolve().parent.parent / "migrations"
    return beside if beside.is_dir() else Path.cwd() / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["url"] = url
    return config


def upgrade(settings: ServiceSettings, revision: str = "head") -> None:
    ensure_data_dir(settings)
    command.upgrade(alembic_config(settings.sqlalchemy_url), revision)


def downgrade(settings: ServiceSettings, revision: str = "-1") -> None:
    command.downgrade(alembic_config(settings.sqlalchemy_url), revision)


def current(settings: ServiceSettings) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from .db import make_engine

    engine = make_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
