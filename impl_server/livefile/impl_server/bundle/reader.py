"""The reader of a bundle: a ``Reader`` whose bytes, for a bundle of finished members, are
composed on each read from its layout — header bytes held in memory and slices of the members'
own files — so that no member is ever copied and any range costs only its own bytes.

Everything else a reader does (statuses, ``follow``, ``wait_for``, the bound by the published
size) is ``Reader``'s, since it reads through ``read_published``. A composed bundle is not one
file: ``one_file`` is False and ``open_fd`` refuses, so the zero-copy paths (``sendfile``) pass
it to the copying ones. Its ``entry`` says the newest member's time as its ``updated_at``, so its
``Last-Modified`` is when its content last changed, not when the bundle was made. A bundle whose
members were still growing was written into its own file by its job: it reads as any resource.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

from livefile.api.interfaces import CatalogEntry, StatusSubscription, Storage
from livefile.api.model import ResourceStatus, TransferStatus
from livefile.impl_server.bundle.layout import BundleLayout
from livefile.impl_server.bundle.store import BundleForm, BundleForms
from livefile.impl_server.manager import ReaderFactory
from livefile.impl_server.reader import INLINE_READ_MAX, READ_PIECE, Reader


class BundleReader(Reader):
    def __init__(
        self,
        entry: CatalogEntry,
        storage: Storage,
        current_status: Callable[[], Awaitable[ResourceStatus | None]],
        subscribe: Callable[[], Awaitable[StatusSubscription | None]],
        forms: BundleForms,
        form: BundleForm | None = None,
    ) -> None:
        """``form``: the bundle's, when it is already known (a finished bundle's)."""
        super().__init__(entry, storage, current_status, subscribe)
        self._forms = forms
        self._form = form
        if isinstance(form, BundleLayout):
            self.entry = dataclasses.replace(entry, updated_at=form.last_modified)

    def _layout(self) -> BundleLayout | None:
        """The layout of a composed bundle; None for one stored in its own file. Only asked
        once bytes are published, which the job does after keeping the form (which never
        changes after: it is kept here once found)."""
        if self._form is None:
            self._form = self._forms.get(self.resource_id)
            if self._form is None:
                raise OSError(f"bundle {self.resource_id} has published bytes but no form")
        return self._form if isinstance(self._form, BundleLayout) else None

    @property
    def one_file(self) -> bool:
        return self._layout() is None

    def open_fd(self) -> int:
        if self._layout() is not None:
            raise OSError("a composed bundle is not one file")
        return super().open_fd()

    async def read_published(self, start: int, end: int) -> bytes:
        if start == end:
            return b""
        layout = self._layout()
        if layout is None:
            return await super().read_published(start, end)
        if end - start <= INLINE_READ_MAX:
            return self._compose(layout, start, end)
        return await asyncio.to_thread(self._compose, layout, start, end)

    async def iter_published(self, start: int, end: int) -> AsyncIterator[bytes]:
        layout = self._layout() if start < end else None
        if layout is None:
            async for data in super().iter_published(start, end):
                yield data
            return
        # Each part on its own, so that no member's bytes are copied again to join them to a
        # header: a whole download costs what one file's costs.
        for piece, offset, count in layout.pieces(start, end):
            if isinstance(piece, bytes):
                yield piece[offset : offset + count]
                continue
            member = layout.members[piece].resource
            for at in range(offset, offset + count, READ_PIECE):
                stop = min(offset + count, at + READ_PIECE)
                if stop - at <= INLINE_READ_MAX:
                    yield self._storage.read(member, at, stop)
                else:
                    yield await asyncio.to_thread(self._storage.read, member, at, stop)

    def _compose(self, layout: BundleLayout, start: int, end: int) -> bytes:
        parts: list[bytes] = []
        for piece, offset, count in layout.pieces(start, end):
            if isinstance(piece, bytes):
                parts.append(piece[offset : offset + count])
            else:
                member = layout.members[piece].resource
                parts.append(self._storage.read(member, offset, offset + count))
        return parts[0] if len(parts) == 1 else b"".join(parts)


def bundle_readers(forms: BundleForms) -> ReaderFactory:
    """The reader factory of bundles, for ``ResourceManager.register_reader``: a finished
    bundle's form is loaded in a worker thread (the layout of 10,000 members takes ~0.4 s to
    build), not on the event loop."""

    async def make(
        entry: CatalogEntry,
        storage: Storage,
        current_status: Callable[[], Awaitable[ResourceStatus | None]],
        subscribe: Callable[[], Awaitable[StatusSubscription | None]],
    ) -> Reader:
        form = None
        if entry.status.transfer_status is TransferStatus.COMPLETED:
            form = await asyncio.to_thread(forms.get, entry.resource_id)
        return BundleReader(entry, storage, current_status, subscribe, forms, form)

    return make
