"""``livefile get``, ``tail``, ``lines`` and ``status`` as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from livefile.client_download import AsyncDownloadClient
from livefile.client_upload import AsyncUploadClient
from tests.support.server import LivefileProcess

LIVEFILE = [sys.executable, "-m", "livefile.impl_common.cli"]
WAIT = 30.0


async def run(*args: str) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        *LIVEFILE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode is not None
    return process.returncode, stdout, stderr


async def test_get_writes_the_resource_to_a_file(server: LivefileProcess, tmp_path: Path) -> None:
    data = os.urandom(2_000_000)
    async with AsyncUploadClient(server.ws_url) as client:
        result = await client.upload_bytes(data, filename="g.bin")
    code, _, stderr = await run("get", result.reference, "-o", str(tmp_path / "g.bin"))
    assert code == 0, stderr
    assert (tmp_path / "g.bin").read_bytes() == data


async def test_status_prints_json(server: LivefileProcess) -> None:
    async with AsyncUploadClient(server.ws_url) as client:
        result = await client.upload_bytes(b"abc", filename="s.bin")
    code, stdout, _ = await run("status", result.reference)
    assert code == 0
    assert json.loads(stdout) == {
        "transferStatus": "COMPLETED",
        "currentSize": 3,
        "numberOfLines": None,
    }


async def test_tail_prints_bytes_as_they_arrive_and_lines_with_n(
    server: LivefileProcess,
) -> None:
    text = [f"line {n}\n".encode() for n in range(100)]
    async with AsyncUploadClient(server.ws_url) as client:
        upload = await client.start(
            filename="t.log", mime_type="text/plain", supports_line_access=True
        )
        await upload.write(b"".join(text[:50]))
        async with AsyncDownloadClient(upload.reference) as watcher:
            await watcher.wait_for_status(lambda status: status.number_of_lines == 50)
        tails = [
            await asyncio.create_subprocess_exec(
                *LIVEFILE, "tail", *extra, upload.reference,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            for extra in ([], ["-n", "5"])
        ]  # fmt: skip
        # Each tail has printed what existed when it connected before anything more is written.
        heads = [
            await asyncio.wait_for(tail.stdout.readexactly(len(b"".join(part))), WAIT)
            for tail, part in zip(tails, (text[:50], text[45:50]), strict=True)
            if tail.stdout is not None
        ]
        for line in text[50:]:
            await upload.write(line)
            await asyncio.sleep(0.005)  # pacing the producer
        await upload.finish()
    outputs = [await asyncio.wait_for(tail.communicate(), WAIT) for tail in tails]
    assert [tail.returncode for tail in tails] == [0, 0], [err for _, err in outputs]
    assert heads[0] + outputs[0][0] == b"".join(text)
    assert heads[1] + outputs[1][0] == b"".join(text[45:])


async def test_lines_prints_the_requested_lines(server: LivefileProcess) -> None:
    async with AsyncUploadClient(server.ws_url) as client:
        result = await client.upload_bytes(
            b"a\nb\nc\nd", filename="l.txt", mime_type="text/plain", supports_line_access=True
        )
    code, stdout, _ = await run("lines", result.reference, "--start", "1", "--count", "3")
    assert code == 0
    assert stdout == b"b\nc\nd"


async def test_get_and_tail_exit_non_zero_when_the_resource_failed(
    server: LivefileProcess, tmp_path: Path
) -> None:
    async with AsyncUploadClient(server.ws_url) as client:
        upload = await client.start(filename="f.bin", mime_type="application/octet-stream")
        await upload.write(b"partial")
        await upload.abort()
    code, _, stderr = await run("get", upload.reference, "-o", str(tmp_path / "f.bin"))
    assert code == 1
    assert b"FAILED at 7 bytes" in stderr
    assert (tmp_path / "f.bin").read_bytes() == b"partial"
    code, stdout, stderr = await run("tail", upload.reference)
    assert code == 1
    assert stdout == b"partial"


async def test_unknown_resource_exits_non_zero(server: LivefileProcess) -> None:
    code, _, stderr = await run("get", f"{server.ws_url}/ws/streaming/download/{'f' * 32}")
    assert code == 1
    assert b"Unknown resource" in stderr
