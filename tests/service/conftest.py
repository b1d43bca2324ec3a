"""Fixtures for the service tests: settings on a temp data dir and an app whose queue runs
the real job function in threads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_testkit import ThreadQueue

from service.app import create_app
from service.settings import ServiceSettings

# TestClient sends "Host: testserver"; the loopback names as a server's defaults
TEST_HOSTS = "testserver,localhost,127.0.0.1,::1"


@pytest.fixture
def settings(tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(data_dir=tmp_path / "data", progress_interval=0.05,
                           max_upload_mb=1.0, require_api_keys=False, database_url=None,
                           allowed_hosts=TEST_HOSTS)


@pytest.fixture
def client(settings: ServiceSettings) -> Iterator[TestClient]:
    queue = ThreadQueue(settings)
    with TestClient(create_app(settings, queue)) as c:
        yield c
    queue.shutdown()
