"""Upload contexts remember that they were closed, within a bound."""

from __future__ import annotations

import pytest

from livefile.impl_server import contexts as contexts_module
from livefile.impl_server.contexts import UploadContexts, context_refusal


async def test_a_closed_context_is_known_as_closed_and_a_never_opened_one_is_not() -> None:
    contexts = UploadContexts()
    opened = await contexts.open()
    assert not await contexts.was_closed(opened)
    await contexts.close(opened)
    assert await contexts.was_closed(opened)
    assert await contexts.resource_count(opened) is None
    assert not await contexts.was_closed("0" * 32)


async def test_closed_contexts_are_remembered_within_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(contexts_module, "CLOSED_REMEMBERED", 3)
    contexts = UploadContexts()
    closed = []
    for _ in range(4):
        context_id = await contexts.open()
        await contexts.close(context_id)
        closed.append(context_id)
    assert [await contexts.was_closed(c) for c in closed] == [False, True, True, True]


def test_the_refusal_says_closed_or_unknown() -> None:
    assert context_refusal("abc", closed=True) == "Upload context abc is closed"
    assert context_refusal("abc", closed=False) == "Unknown upload context abc"
