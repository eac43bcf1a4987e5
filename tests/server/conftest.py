"""The resource manager on its real embedded backends, for the tests of this folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from livefile.impl_server.manager import ResourceManager
from tests.server.test_manager import make_manager


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[ResourceManager]:
    manager = make_manager(tmp_path)
    yield manager
    await manager.shutdown()
    await manager.catalog.close()
