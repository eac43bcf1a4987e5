"""Where a bundle's form is kept: ``<id>.bundle.json`` beside its (empty or ZIP) bytes, on the
storage every worker shares, written by its job before any of its bytes is published — so a
reader that is asked for published bytes always finds it — and never changed after.

Two forms: ``composed`` (every member was finished: the fixed layout, whose bytes the reader
composes from the members' files) and ``stored`` (a member was still growing: the job wrote the
ZIP into the bundle's own file, read like any resource). The newest layouts are kept in memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from livefile.api.interfaces import Storage
from livefile.impl_common.lru import LruCache
from livefile.impl_server.bundle.layout import BundleLayout

STORED: Literal["stored"] = "stored"
BundleForm = BundleLayout | Literal["stored"]
LAYOUTS_CACHED = 64


class BundleForms:
    """The forms of bundles (blocking file I/O: call from a worker thread, or for small files
    where a thread hop costs more)."""

    def __init__(self, storage: Storage, capacity: int = LAYOUTS_CACHED) -> None:
        self._storage = storage
        self._cache: LruCache[str, BundleForm] = LruCache(capacity)

    def _path(self, resource_id: str) -> Path:
        return self._storage.path(resource_id).with_suffix(".bundle.json")

    def write(self, resource_id: str, form: BundleForm) -> None:
        """Keep ``form`` (atomically: a temporary file renamed over the name)."""
        if isinstance(form, BundleLayout):
            document = {"form": "composed", "layout": form.to_json()}
        else:
            document = {"form": STORED}
        path = self._path(resource_id)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_bytes(json.dumps(document, separators=(",", ":")).encode())
        os.replace(temporary, path)
        self._cache.put(resource_id, form)

    def get(self, resource_id: str) -> BundleForm | None:
        """The bundle's form; None before its job has decided it (nothing is published yet)."""
        if (cached := self._cache.get(resource_id)) is not None:
            return cached
        try:
            document = json.loads(self._path(resource_id).read_bytes())
        except FileNotFoundError:
            return None
        form: BundleForm = (
            BundleLayout.from_json(document["layout"])
            if document.get("form") == "composed"
            else STORED
        )
        self._cache.put(resource_id, form)
        return form
