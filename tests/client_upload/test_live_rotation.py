"""Following a live file through log rotation, as ``tail -F`` does: after a truncation
(``copytruncate``) or a replacement (rename and re-create), the new content is uploaded from
its start after the old, and the rotation is reported, never silent."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from livefile.client_upload import AsyncUploadClient, Rotation, UploadResult
from livefile.client_upload.live_file import FollowedFile, follow_file
from tests.client_upload.watch import wait_for_status
from tests.support.server import LivefileProcess
from tests.support.wire import download

OLD = b"a1\na2\na3\n"
NEW = b"b1\nb2\nb3\nb4\nb5\nb6\n"  # longer than OLD: a size check alone would miss the rewrite


class LiveUpload:
    """``upload_live_file`` running in a task, with the resource id once it is known."""

    def __init__(self, server: LivefileProcess, path: Path) -> None:
        self.server = server
        self.path = path
        self.rotations: list[Rotation] = []
        self.done = asyncio.Event()
        self._reference: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> UploadResult:
        return await AsyncUploadClient(self.server.ws_url).upload_live_file(
            self.path,
            until=self.done,
            on_reference=self._reference.set_result,
            on_rotation=self.rotations.append,
        )

    async def wait_for_size(self, size: int) -> None:
        resource_id = (await self._reference).rsplit("/", 1)[1]
        await wait_for_status(self.server.ws_url, resource_id, lambda s: s["currentSize"] == size)

    async def finish(self) -> bytes:
        self.done.set()
        result = await self.task
        return await download(self.server.ws_url, result.resource_id)


async def test_a_truncated_and_rewritten_file_is_followed_from_its_start(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(OLD)
    live = LiveUpload(server, path)
    await live.wait_for_size(len(OLD))
    with path.open("r+b") as log:  # copytruncate: the same file, cut and written again
        log.truncate(0)
        log.write(NEW)
    await live.wait_for_size(len(OLD) + len(NEW))
    assert await live.finish() == OLD + NEW
    assert live.rotations == [Rotation(str(path), "truncated", len(OLD))]


async def test_a_file_truncated_to_nothing_then_written_again_is_followed(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(OLD)
    live = LiveUpload(server, path)
    await live.wait_for_size(len(OLD))
    os.truncate(path, 0)
    await asyncio.sleep(0.3)  # the follower sees the empty file before anything new
    with path.open("ab") as log:
        log.write(b"b1\n")
    await live.wait_for_size(len(OLD) + 3)
    assert await live.finish() == OLD + b"b1\n"
    assert live.rotations == [Rotation(str(path), "truncated", len(OLD))]


async def test_a_renamed_and_recreated_file_is_read_to_its_end_then_the_new_one(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(OLD)
    live = LiveUpload(server, path)
    await live.wait_for_size(len(OLD))
    with path.open("ab") as writer:
        path.rename(tmp_path / "app.log.1")
        writer.write(b"a4\n")  # the writer still had the old file open
    path.write_bytes(NEW)
    await live.wait_for_size(len(OLD) + 3 + len(NEW))
    assert await live.finish() == OLD + b"a4\n" + NEW
    assert live.rotations == [Rotation(str(path), "replaced", len(OLD) + 3)]


async def test_bytes_appended_to_the_old_file_just_before_its_replacement_are_read_first(
    tmp_path: Path,
) -> None:
    """The writer appends to the renamed file and the new one appears right after the read
    that found the old file's end (the window the test above hit under load): those bytes are
    read before the new file's."""
    path = tmp_path / "app.log"
    path.write_bytes(OLD)

    class ReplacedAfterItsEnd(FollowedFile):
        rotated = False

        def read(self, size: int) -> memoryview | None:
            chunk = super().read(size)
            if chunk is not None and not chunk and not self.rotated:
                self.rotated = True  # between this read and the next check
                path.rename(tmp_path / "app.log.1")
                with (tmp_path / "app.log.1").open("ab") as writer:
                    writer.write(b"a4\n")
                path.write_bytes(NEW)
            return chunk

    done = asyncio.Event()
    kinds: list[str] = []
    received = b""
    async with asyncio.timeout(10):
        async for chunk in follow_file(ReplacedAfterItsEnd(path), done, 0.01, 1024, kinds.append):
            received += bytes(chunk)
            if len(received) >= len(OLD) + len(NEW):
                done.set()  # whatever arrived by then, and the end, is all there is
    assert received == OLD + b"a4\n" + NEW
    assert kinds == ["replaced"]


async def test_without_on_rotation_a_warning_is_logged(
    server: LivefileProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(OLD)
    done = asyncio.Event()
    references: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(
        AsyncUploadClient(server.ws_url).upload_live_file(
            path, until=done, on_reference=references.put_nowait
        )
    )
    resource_id = (await references.get()).rsplit("/", 1)[1]
    await wait_for_status(server.ws_url, resource_id, lambda s: s["currentSize"] == len(OLD))
    with caplog.at_level(logging.WARNING, logger="livefile.client_upload"):
        path.write_bytes(NEW)  # opened with O_TRUNC: a truncation
        await wait_for_status(
            server.ws_url, resource_id, lambda s: s["currentSize"] == len(OLD) + len(NEW)
        )
    done.set()
    await task
    assert caplog.messages == [
        f"{path} was truncated; following it from its start, which goes on the resource"
        f" at byte {len(OLD)}"
    ]


async def test_the_cli_says_on_stderr_that_the_file_was_rotated(
    server: LivefileProcess, tmp_path: Path
) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(OLD)
    process = subprocess.Popen(
        [sys.executable, "-m", "livefile.impl_common.cli", "upload", str(path),
         "--server", server.ws_url, "--live", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    resource_id = process.stdout.readline().strip().rsplit("/", 1)[1]
    await wait_for_status(server.ws_url, resource_id, lambda s: s["currentSize"] == len(OLD))
    path.write_bytes(NEW)
    await wait_for_status(
        server.ws_url, resource_id, lambda s: s["currentSize"] == len(OLD) + len(NEW)
    )
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert stderr == (
        f"livefile: {path} was truncated; following it from its start, which goes on the"
        f" resource at byte {len(OLD)}\n"
    )
    assert json.loads(stdout.splitlines()[-1])["size"] == len(OLD) + len(NEW)
    assert await download(server.ws_url, resource_id) == OLD + NEW


def read(followed: FollowedFile) -> bytes:
    chunk = followed.read(1024)
    assert chunk is not None
    return bytes(chunk)


def test_a_rewrite_that_outgrew_the_old_size_is_noticed_by_its_content(tmp_path: Path) -> None:
    """The case that lost b1-b3: truncated and rewritten past the old size between two polls."""
    path = tmp_path / "app.log"
    path.write_bytes(OLD)
    followed = FollowedFile(path)
    try:
        assert read(followed) == OLD
        path.write_bytes(NEW)
        assert followed.read(1024) is None  # rotated: the next read starts again at 0
        assert read(followed) == NEW
        assert read(followed) == b""
    finally:
        followed.close()


async def test_a_directory_or_a_pipe_is_refused_before_anything_is_created(
    server: LivefileProcess, tmp_path: Path
) -> None:
    client = AsyncUploadClient(server.ws_url)
    with pytest.raises(IsADirectoryError):
        await client.upload_file(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ValueError, match="not a regular file"):
        await client.upload_file(tmp_path / "fifo")
