"""Clients never depend on server code or server dependencies (DESIGN.md's module table)."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
SERVER_ONLY = {
    "livefile-impl-server", "livefile-impl-websocket", "fastapi", "starlette", "uvicorn",
    "httptools", "uvloop", "pydantic-settings", "redis",
}  # fmt: skip
ALLOWED_IMPORTS = {
    "api": {"livefile.api", "pydantic"},
    # crc32c computes the default checksum, at both ends: a digest library, like hashlib.
    "impl_common": {"livefile.api", "livefile.impl_common", "crc32c"},
    "client_upload": {
        "livefile.api",
        "livefile.impl_common",
        "livefile.client_upload",
        "websockets",
        "tqdm",
    },
    "client_download": {
        "livefile.api",
        "livefile.impl_common",
        "livefile.client_download",
        "websockets",
        "tqdm",
    },
}
CLIENTS = ("livefile-client-upload", "livefile-client-download")


def dependency_closure(name: str) -> set[str]:
    """Every distribution ``name`` pulls in when installed (extras not requested)."""
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for text in distribution(current).requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name.lower().replace("_", "-"))
    return seen


@pytest.mark.parametrize("client", CLIENTS)
def test_client_distribution_pulls_in_no_server_dependency(client: str) -> None:
    assert dependency_closure(client) & SERVER_ONLY == set()


def imported_modules(folder: Path) -> set[str]:
    modules: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
    return modules


def is_allowed(module: str, allowed: set[str]) -> bool:
    top = module.split(".")[0]
    if top in sys.stdlib_module_names:
        return True
    return any(module == prefix or module.startswith(prefix + ".") for prefix in allowed)


@pytest.mark.parametrize("folder", sorted(ALLOWED_IMPORTS))
def test_module_imports_only_what_the_design_allows(folder: str) -> None:
    allowed = ALLOWED_IMPORTS[folder]
    modules = imported_modules(ROOT / folder / "livefile" / folder)
    assert sorted(m for m in modules if not is_allowed(m, allowed)) == []


def test_clients_import_with_server_packages_blocked() -> None:
    """Import every client module in a fresh interpreter where server packages cannot load."""
    script = """
import importlib, pkgutil, sys
class Block:
    blocked = ("fastapi", "starlette", "uvicorn", "livefile.impl_server", "livefile.impl_websocket")
    def find_spec(self, name, path=None, target=None):
        if name.startswith(self.blocked):
            raise ImportError(f"client code imported server package {name}")
sys.meta_path.insert(0, Block())
for package in ("livefile.client_upload", "livefile.client_download"):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        importlib.import_module(info.name)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# The server side's own line: the resource manager, its backends and producers know nothing of
# the web framework or the ASGI server that carry them (api and impl_common are held to their
# allow-lists above, which name neither these nor redis).
FORBIDDEN_IMPORTS = {"impl_server": {"fastapi", "starlette", "uvicorn"}}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN_IMPORTS))
def test_server_module_imports_no_web_framework(folder: str) -> None:
    forbidden = FORBIDDEN_IMPORTS[folder]
    found = {
        module
        for module in imported_modules(ROOT / folder / "livefile")
        if module.split(".")[0] in forbidden
    }
    assert found == set(), f"{folder} imports {sorted(found)}"
