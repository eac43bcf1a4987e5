"""The async download client against a real server: statuses, ranges, pipelining, following a
growing resource to its end, and failures that raise instead of ending quietly."""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest

from livefile.api import (
    ConnectionLostError,
    LivefileTimeoutError,
    RequestError,
    ResourceFailedError,
    ResourceNotFoundError,
    ResourceStatus,
    TransferStatus,
)
from livefile.client_download import AsyncDownloadClient
from tests.support.raw_upload import RawUpload, upload
from tests.support.server import LivefileProcess

WAIT = 30.0
COMPLETED, FAILED = TransferStatus.COMPLETED, TransferStatus.FAILED


async def collect(download: AsyncDownloadClient, start: int = 0) -> bytes:
    return b"".join([piece async for piece in download.iter_bytes(start)])


# --- statuses ----------------------------------------------------------------------------------


async def test_current_status_is_known_as_soon_as_connected(server: LivefileProcess) -> None:
    reference = await upload(server.ws_url, b"abc")
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        assert download.status.step_streaming() == ResourceStatus(
            transfer_status=COMPLETED, current_size=3
        )
        assert download.resource_id == reference.rsplit("/", 1)[1]


async def test_a_new_upload_is_initiated_and_empty_on_connect(server: LivefileProcess) -> None:
    async with (
        RawUpload(server.ws_url) as raw,
        AsyncDownloadClient(raw.reference, timeout=WAIT) as download,
    ):
        assert download.status.step_streaming() == ResourceStatus(
            transfer_status=TransferStatus.INITIATED, current_size=0
        )


async def test_http_reference_reaches_the_same_resource(server: LivefileProcess) -> None:
    reference = await upload(server.ws_url, b"via http")
    resource_id = reference.rsplit("/", 1)[1]
    async with AsyncDownloadClient(f"{server.http_url}/resources/{resource_id}") as download:
        assert await download.read(0, 8) == b"via http"


async def test_listener_sees_statuses_in_order_ending_with_the_terminal_one(
    server: LivefileProcess,
) -> None:
    data = os.urandom(400_000)
    seen: list[ResourceStatus] = []
    async with (
        RawUpload(server.ws_url) as raw,
        AsyncDownloadClient(raw.reference, timeout=WAIT) as download,
    ):
        download.add_status_listener(seen.append)
        await raw.trickle(data, seconds=1.0)
        await raw.finish()
        final = await download.wait_for_end(timeout=WAIT)
    assert final.step_streaming() == ResourceStatus(
        transfer_status=COMPLETED, current_size=len(data)
    )
    assert seen[-1] == final
    assert len(seen) > 2  # it watched the resource grow
    assert all(later.is_newer_than(earlier) for earlier, later in itertools.pairwise(seen))


async def test_removed_listener_is_called_no_more(server: LivefileProcess) -> None:
    calls: list[ResourceStatus] = []
    async with (
        RawUpload(server.ws_url) as raw,
        AsyncDownloadClient(raw.reference, timeout=WAIT) as download,
    ):
        remove = download.add_status_listener(calls.append)
        await raw.write(b"x")
        await download.wait_for_status(lambda status: status.current_size == 1)
        remove()
        await raw.finish()
        await download.wait_for_end(timeout=WAIT)
    assert [status.current_size for status in calls] == [1]


async def test_a_failing_listener_does_not_break_the_connection(
    server: LivefileProcess,
) -> None:
    def explode(status: ResourceStatus) -> None:
        raise RuntimeError("listener bug")

    async with (
        RawUpload(server.ws_url) as raw,
        AsyncDownloadClient(raw.reference, timeout=WAIT) as download,
    ):
        download.add_status_listener(explode)
        await raw.write(b"data")
        await raw.finish()
        assert (await download.wait_for_end(timeout=WAIT)).current_size == 4
        assert await download.read(0, 4) == b"data"


async def test_wait_for_status_returns_the_first_status_that_matches(
    server: LivefileProcess,
) -> None:
    async with (
        RawUpload(server.ws_url) as raw,
        AsyncDownloadClient(raw.reference, timeout=WAIT) as download,
    ):
        waiting = asyncio.create_task(
            download.wait_for_status(lambda status: status.current_size >= 5)
        )
        await raw.write(b"12345")
        status = await waiting
        await raw.finish()
    assert status.step_streaming() == ResourceStatus(
        transfer_status=TransferStatus.IN_PROGRESS, current_size=5
    )


async def test_wait_for_status_gives_up_after_its_timeout(server: LivefileProcess) -> None:
    async with (
        RawUpload(server.ws_url) as raw,
        AsyncDownloadClient(raw.reference, timeout=WAIT) as download,
    ):
        with pytest.raises(LivefileTimeoutError):
            await download.wait_for_status(lambda status: status.current_size > 0, timeout=0.2)


# --- reading ranges ----------------------------------------------------------------------------


async def test_read_returns_exactly_the_requested_range(server: LivefileProcess) -> None:
    data = os.urandom(3_000_000)  # replies of several data messages
    reference = await upload(server.ws_url, data)
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        assert await download.read(0, len(data)) == data
        assert await download.read(1_000_001, 2_500_000) == data[1_000_001:2_500_000]
        assert await download.read(7, 7) == b""
        assert await download.read(len(data), len(data)) == b""


async def test_read_serves_bytes_while_the_upload_is_still_running(
    server: LivefileProcess,
) -> None:
    async with (
        RawUpload(server.ws_url) as raw,
        AsyncDownloadClient(raw.reference, timeout=WAIT) as download,
    ):
        await raw.write(b"first part,")
        await download.wait_for_status(lambda status: status.current_size == 11)
        assert await download.read(0, 11) == b"first part,"
        await raw.write(b" second part")
        await download.wait_for_status(lambda status: status.current_size == 23)
        assert await download.read(6, 23) == b"part, second part"
        assert download.status.transfer_status is TransferStatus.IN_PROGRESS
        await raw.finish()


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(-1, 2, id="negative start"),
        pytest.param(3, 1, id="inverted"),
        pytest.param(0, 4, id="beyond the size"),
        pytest.param(4, 4, id="empty beyond the size"),
    ],
)
async def test_bad_range_raises_and_the_connection_stays_usable(
    server: LivefileProcess, start: int, end: int
) -> None:
    reference = await upload(server.ws_url, b"abc")
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        with pytest.raises(RequestError) as caught:
            await download.read(start, end)
        assert caught.value.code == "BAD_RANGE"
        assert f"[{start}, {end})" in caught.value.reason
        assert await download.read(1, 3) == b"bc"


async def test_pipelined_reads_each_get_their_own_bytes(server: LivefileProcess) -> None:
    data = os.urandom(5_000_000)
    reference = await upload(server.ws_url, data)
    ranges = [(0, 10), (10, 10), (4_000_000, 5_000_000), (123, 2_500_000), (4_999_999, 5_000_000)]
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        replies = await asyncio.gather(*(download.read(start, end) for start, end in ranges))
    assert replies == [data[start:end] for start, end in ranges]


async def test_a_bad_range_among_pipelined_reads_fails_only_its_own_read(
    server: LivefileProcess,
) -> None:
    data = os.urandom(2_500_000)
    reference = await upload(server.ws_url, data)
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        before, bad, after = await asyncio.gather(
            download.read(0, 2_000_000),
            download.read(5, 3_000_000),
            download.read(2_000_000, 2_500_000),
            return_exceptions=True,
        )
    assert before == data[:2_000_000]
    assert isinstance(bad, RequestError)
    assert after == data[2_000_000:]


# --- following ---------------------------------------------------------------------------------


async def test_iter_bytes_follows_a_growing_resource_to_its_completion(
    server: LivefileProcess,
) -> None:
    data = os.urandom(1_500_000)
    async with (
        RawUpload(server.ws_url) as raw,
        AsyncDownloadClient(raw.reference, timeout=WAIT) as download,
    ):
        follower = asyncio.create_task(collect(download))
        await raw.trickle(data, seconds=1.5, pieces=30)
        await raw.finish()
        assert await follower == data
        assert download.status.step_streaming() == ResourceStatus(
            transfer_status=COMPLETED, current_size=len(data)
        )


async def test_iter_bytes_of_a_large_resource_comes_in_bounded_pieces(
    server: LivefileProcess,
) -> None:
    data = os.urandom(10_000_000)
    reference = await upload(server.ws_url, data)
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        pieces = [piece async for piece in download.iter_bytes()]
    assert b"".join(pieces) == data
    assert max(len(piece) for piece in pieces) <= 4 * 1024 * 1024


async def test_iter_bytes_starts_at_the_given_offset(server: LivefileProcess) -> None:
    reference = await upload(server.ws_url, b"0123456789")
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        assert await collect(download, start=7) == b"789"


async def test_iter_bytes_raises_after_the_readable_bytes_when_the_uploader_drops(
    server: LivefileProcess,
) -> None:
    async with (
        RawUpload(server.ws_url) as raw,
        AsyncDownloadClient(raw.reference, timeout=WAIT) as download,
    ):
        received = bytearray()

        async def follow() -> None:
            async for piece in download.iter_bytes():
                received.extend(piece)

        follower = asyncio.create_task(follow())
        await raw.write(b"0123456789")
        await download.wait_for_status(lambda status: status.current_size == 10)
        await raw.drop()
        with pytest.raises(ResourceFailedError, match="FAILED at 10 bytes") as caught:
            await follower
        assert bytes(received) == b"0123456789"
        assert caught.value.size == 10
        assert download.status.step_streaming() == ResourceStatus(
            transfer_status=FAILED, current_size=10
        )
        assert await download.read(0, 10) == b"0123456789"


async def test_breaking_out_of_iter_bytes_leaves_the_client_usable(
    server: LivefileProcess,
) -> None:
    data = os.urandom(12_000_000)  # three pieces, two of them requested at once
    reference = await upload(server.ws_url, data)
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        async for piece in download.iter_bytes():
            assert piece == data[: len(piece)]
            break
        assert await download.read(11_999_990, 12_000_000) == data[-10:]


async def test_save_writes_the_resource_and_returns_the_final_status(
    server: LivefileProcess, tmp_path: Path
) -> None:
    data = os.urandom(1_234_567)
    async with (
        RawUpload(server.ws_url) as raw,
        AsyncDownloadClient(raw.reference, timeout=WAIT) as download,
    ):
        saving = asyncio.create_task(download.save(tmp_path / "copy.bin"))
        await raw.trickle(data, seconds=0.5, pieces=10)
        await raw.finish()
        final = await saving
    assert (tmp_path / "copy.bin").read_bytes() == data
    assert final.step_streaming() == ResourceStatus(
        transfer_status=COMPLETED, current_size=len(data)
    )


async def test_save_of_a_failed_resource_keeps_its_bytes_and_raises(
    server: LivefileProcess, tmp_path: Path
) -> None:
    async with RawUpload(server.ws_url) as raw:
        await raw.write(b"partial")
        async with AsyncDownloadClient(raw.reference, timeout=WAIT) as download:
            await download.wait_for_status(lambda status: status.current_size == 7)
            await raw.drop()
            with pytest.raises(ResourceFailedError):
                await download.save(tmp_path / "partial.bin")
    assert (tmp_path / "partial.bin").read_bytes() == b"partial"


# --- lines -------------------------------------------------------------------------------------


async def test_lines_page_through_bounded_replies(server: LivefileProcess) -> None:
    lines = [f"{n:06d} {'z' * 300}\n" for n in range(6000)]  # ~1.8 MB: several replies
    reference = await upload(
        server.ws_url, "".join(lines).encode(), mime_type="text/plain", supports_line_access=True
    )
    async with AsyncDownloadClient(reference, timeout=WAIT) as download:
        assert await download.lines(0, 6000) == lines
        assert await download.lines(5998, 2) == lines[5998:]


async def test_iter_lines_follows_a_growing_text(server: LivefileProcess) -> None:
    text = [f"step {n} done\n" for n in range(200)]
    async with (
        RawUpload(
            server.ws_url, filename="run.log", mime_type="text/plain", supports_line_access=True
        ) as raw,
        AsyncDownloadClient(raw.reference, timeout=WAIT) as download,
    ):

        async def follow() -> list[str]:
            return [line async for line in download.iter_lines()]

        follower = asyncio.create_task(follow())
        # Lines split across messages, so that partial lines are in flight.
        data = "".join(text).encode() + b"no newline at the end"
        await raw.trickle(data, seconds=0.5, pieces=25)
        await raw.finish()
        assert await follower == [*text, "no newline at the end"]


async def test_lines_of_a_resource_without_line_access_are_refused(
    server: LivefileProcess,
) -> None:
    async with (
        RawUpload(server.ws_url) as raw,
        AsyncDownloadClient(raw.reference, timeout=WAIT) as download,
    ):
        with pytest.raises(RequestError) as caught:
            await download.lines(0, 1)
        assert caught.value.code == "UNSUPPORTED"
        # Following lines fails at once too, not when the upload ends.
        with pytest.raises(RequestError, match="UNSUPPORTED"):
            await asyncio.wait_for(anext(download.iter_lines()), WAIT)


# --- unknown resources and connections ---------------------------------------------------------


async def test_unknown_resource_raises_not_found(server: LivefileProcess) -> None:
    reference = f"{server.ws_url}/ws/streaming/download/{'e' * 32}"
    with pytest.raises(ResourceNotFoundError, match="e" * 32):
        async with AsyncDownloadClient(reference, timeout=WAIT):
            pass


@pytest.mark.parametrize(
    "reference",
    [
        "ws://127.0.0.1:1/ws/streaming/download/../../etc/passwd",
        "ws://127.0.0.1:1/ws/streaming/download/ABCDEF",
        "http://127.0.0.1:1/somewhere/else",
        "not a url",
    ],
)
def test_malformed_reference_is_refused_before_connecting(reference: str) -> None:
    with pytest.raises(ValueError, match="Not a livefile"):
        AsyncDownloadClient(reference)


async def test_calls_after_close_fail_with_connection_lost(server: LivefileProcess) -> None:
    reference = await upload(server.ws_url, b"abc")
    download = AsyncDownloadClient(reference, timeout=WAIT)
    async with download:
        pass
    with pytest.raises(ConnectionLostError, match="closed"):
        await download.read(0, 1)
    assert download.status.current_size == 3  # the last status is still known
