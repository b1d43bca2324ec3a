"""The service's one settings object, read from the environment (DESIGN.md: Configuration).

Variables carry the prefix ``NNVERIFY_`` (``NNVERIFY_DATA_DIR``, ``NNVERIFY_MAX_UPLOAD_MB``, ...);
``DATABASE_URL`` and ``REDIS_URL`` are read without it, as container platforms set them.
Every entry point builds one ``ServiceSettings`` and passes it down; nothing reads the
environment elsewhere.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/nnverify``, else ``~/.local/share/nnverify``."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "nnverify"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NNVERIFY_", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(default_factory=lambda: default_data_dir())
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "NNVERIFY_DATABASE_URL"))
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "NNVERIFY_REDIS_URL"))
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_upload_mb: float = Field(default=100.0, gt=0)
    worker_backend: Literal["local", "celery"] = "local"
    local_workers: int = Field(default=2, ge=1)
    # the local pool's processes share the machine with the API: they run at this lower CPU
    # priority (nice) so status polls are answered promptly while jobs compute
    worker_nice: int = Field(default=10, ge=0, le=19)
    # torch threads per local worker process; None: the machine's cores / local_workers
    worker_threads: int | None = Field(default=None, ge=1)
    # memory one job may hold on CPU ("8G", "512M" or bytes); None: the engine's default
    # (60% of the machine's) shared among the local workers
    worker_memory: str | None = None
    # None: decided from the host (required unless the server listens on loopback only)
    require_api_keys: bool | None = None
    # Host headers the server answers (comma-separated; "*": any); other hosts get 400, so
    # a DNS-rebinding page cannot reach a loopback server.  None: see allowed_host_names
    allowed_hosts: str | None = None
    # signs the dashboard's CSRF tokens; None: a random secret kept in data_dir/secret_key
    # (set it when several API processes on different machines serve one dashboard)
    secret_key: str | None = Field(default=None, min_length=16)
    max_job_timeout: float = Field(default=3600.0, gt=0)
    progress_interval: float = Field(default=0.5, gt=0)
    # a job whose worker vanished this many times fails instead of being run again
    max_attempts: int = Field(default=3, ge=1)
    # a running job whose worker's heartbeat (every progress_interval) is older than this
    # is re-queued by the reconciler: a killed worker's job runs again within
    # job_lease_seconds + reconcile_interval
    job_lease_seconds: float = Field(default=30.0, gt=0)
    # seconds between the reconciler's passes (service/reconciler.py)
    reconcile_interval: float = Field(default=15.0, gt=0)
    # seconds before Redis hands an unacknowledged message to another worker; a copy
    # delivered while its job runs is dropped (service/worker.py: claim), so this only
    # bounds how long a message delivered to a worker that died before claiming waits
    celery_visibility_timeout: float = Field(default=4000.0, gt=0)
    # logs: "text" for people, "json" (one object a line, with job_id) for collectors
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    celery_queue: str = "nnverify"
    worker_device: str | None = None
    # proofs of verified results (issue 17; service/proofs.py): "off" searches none;
    # "after" publishes the engine's verdict and records the proof the worker then searched
    # and had the independent checker check, within the same run; "required" publishes
    # "verified" only when the checker accepted the proof (else the job ends "unknown")
    proofs: Literal["off", "after", "required"] = "after"
    # seconds for the proof search, on top of the job's own timeout (checking is not timed:
    # it is evaluation, linear in the proof's size)
    proof_timeout: float = Field(default=60.0, gt=0)
    # test hook: a job sleeps this long (cancellable) before verifying; only tests set it
    test_job_delay: float = Field(default=0.0, ge=0)

    @field_validator("worker_memory")
    @classmethod
    def _memory_size(cls, text: str | None) -> str | None:
        """A size the engine reads ("8G", "512M", bytes), refused at start-up otherwise."""
        if text:
            from verifier.bounds.limits import parse_bytes

            parse_bytes(text)  # ValueError: pydantic reports it for NNVERIFY_WORKER_MEMORY
        return text

    @field_validator("database_url")
    @classmethod
    def _normalise_postgres_url(cls, url: str | None) -> str | None:
        """Accept ``postgres://`` and ``postgresql://`` and use the psycopg 3 driver."""
        if url is None:
            return None
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    @property
    def keys_required(self) -> bool:
        if self.require_api_keys is not None:
            return self.require_api_keys
        return not is_loopback(self.host)

    @property
    def allowed_host_names(self) -> frozenset[str] | None:
        """The Host names (without port) the server answers; None: any.  By default
        localhost, 127.0.0.1, ::1 and the address it listens on, or this machine's names
        where it listens on every address (0.0.0.0, ::)."""
        if self.allowed_hosts is not None:
            names = {h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()}
            return None if "*" in names else frozenset(names)
        names = {"localhost", "127.0.0.1", "::1"}
        if self.host in ("0.0.0.0", "::", ""):
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        else:
            names.add(self.host.lower().strip("[]"))
        return frozenset(names)

    @property
    def threads_per_worker(self) -> int:
        if self.worker_threads is not None:
            return self.worker_threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
        return max(1, cores // self.local_workers)

    @property
    def memory_per_worker(self) -> int:
        """Bytes one job may hold on CPU (the engine's memory budget)."""
        import torch  # the engine's, imported only where a worker needs it

        from verifier.bounds.limits import default_limit, parse_bytes

        if self.worker_memory:
            return parse_bytes(self.worker_memory)
        workers = self.local_workers if self.worker_backend == "local" else 1
        return default_limit(torch.device("cpu")) // workers

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'nnverify.db').resolve()}"


class ClientSettings(BaseSettings):
    """Where the ``nnverify`` client commands (submit, status, results, ...) and
    :mod:`service.client` find a server: ``NNVERIFY_URL`` (default
    ``http://127.0.0.1:$NNVERIFY_PORT``, the address ``nnverify serve`` listens on by default)
    and ``NNVERIFY_API_KEY`` (sent as ``X-API-Key`` when set)."""

    model_config = SettingsConfigDict(env_prefix="NNVERIFY_", extra="ignore")

    url: str | None = None
    api_key: str | None = None
    port: int = Field(default=8000, ge=0, le=65535)

    @property
    def base_url(self) -> str:
        return (self.url or f"http://127.0.0.1:{self.port}").rstrip("/")
