"""Fixtures: real ``livefile serve`` processes on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisProcess
from tests.support.server import LivefileProcess

ServerFactory = Callable[..., LivefileProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with extra ``livefile serve`` flags (and environment variables); all are
    stopped after the test."""
    started: list[LivefileProcess] = []

    def start(
        *args: str, data_dir: Path | None = None, env: dict[str, str] | None = None
    ) -> LivefileProcess:
        server = LivefileProcess(data_dir or tmp_path / "data", *args, env=env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    """One server for the tests that need nothing special (default settings)."""
    server = LivefileProcess(tmp_path_factory.mktemp("shared") / "data").start()
    yield server
    server.kill()


@pytest.fixture
def server(shared_server: LivefileProcess) -> LivefileProcess:
    if shared_server.process is None or shared_server.process.poll() is not None:
        pytest.fail("the shared server died:\n" + shared_server.log())
    return shared_server


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A fresh redis-server for one test (see tests/support/redis_server.py)."""
    server = RedisProcess(tmp_path / "redis").start()
    yield server
    server.stop()
