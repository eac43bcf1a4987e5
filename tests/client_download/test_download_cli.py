"""``livefile get``, ``tail``, ``lines`` and ``status`` as a user runs them: real processes
against a real server, judged by their output and exit status."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from livefile.impl_common.cli import main
from tests.support.raw_upload import RawUpload, upload
from tests.support.server import LivefileProcess, free_port
from tests.support.terminal import run_with_terminal_stderr
from tests.support.wire import plain_status

LIVEFILE = [sys.executable, "-m", "livefile.impl_common.cli"]
WAIT = 30.0
PIPE = asyncio.subprocess.PIPE


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*LIVEFILE, *args, stdout=PIPE, stderr=PIPE)


async def run(*args: str) -> tuple[int, bytes, bytes]:
    process = await start(*args)
    stdout, stderr = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode is not None
    return process.returncode, stdout, stderr


def one_line(stderr: bytes) -> str:
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


async def test_get_writes_the_resource_to_a_file(server: LivefileProcess, tmp_path: Path) -> None:
    data = os.urandom(2_000_000)
    reference = await upload(server.ws_url, data)
    code, stdout, stderr = await run("get", reference, "-o", str(tmp_path / "g.bin"))
    assert (code, stdout, stderr) == (0, b"", b"")
    assert (tmp_path / "g.bin").read_bytes() == data


async def test_get_follows_a_growing_resource_to_its_end_on_stdout(
    server: LivefileProcess,
) -> None:
    data = os.urandom(500_000)
    async with RawUpload(server.ws_url) as raw:
        get = await start("get", raw.reference)
        await raw.trickle(data, seconds=1.0)
        await raw.finish()
        stdout, stderr = await asyncio.wait_for(get.communicate(), WAIT)
    assert get.returncode == 0, stderr
    assert stdout == data


async def test_tail_prints_the_bytes_as_they_arrive(server: LivefileProcess) -> None:
    first, second = b"first line\n" * 100, b"second line\n" * 100
    async with RawUpload(server.ws_url, mime_type="text/plain") as raw:
        await raw.write(first)
        tail = await start("tail", raw.reference)
        assert tail.stdout is not None
        # Printed (and flushed) while the upload is still running: nothing more is written
        # until the tail has shown the first part.
        shown = await asyncio.wait_for(tail.stdout.readexactly(len(first)), WAIT)
        await raw.write(second)
        await raw.finish()
        rest, stderr = await asyncio.wait_for(tail.communicate(), WAIT)
    assert tail.returncode == 0, stderr
    assert (shown, rest) == (first, second)


async def test_status_prints_the_current_status_as_json(server: LivefileProcess) -> None:
    reference = await upload(server.ws_url, b"abc")
    code, stdout, _ = await run("status", reference)
    assert code == 0
    assert plain_status(json.loads(stdout)) == {
        "transferStatus": "COMPLETED",
        "currentSize": 3,
        "numberOfLines": None,
    }


async def test_get_and_tail_exit_1_when_the_resource_failed(
    server: LivefileProcess, tmp_path: Path
) -> None:
    async with RawUpload(server.ws_url) as raw:
        await raw.write(b"partial")
        await raw.drop()
    (get_code, _, get_err), (tail_code, tail_out, tail_err) = await asyncio.gather(
        run("get", raw.reference, "-o", str(tmp_path / "f.bin")), run("tail", raw.reference)
    )
    assert get_code == tail_code == 1
    assert "FAILED at 7 bytes" in one_line(get_err)
    assert "FAILED at 7 bytes" in one_line(tail_err)
    assert (tmp_path / "f.bin").read_bytes() == tail_out == b"partial"


async def test_errors_exit_non_zero_with_one_line_on_stderr(server: LivefileProcess) -> None:
    unknown = f"{server.ws_url}/ws/streaming/download/{'f' * 32}"
    nobody = f"ws://127.0.0.1:{free_port()}/ws/streaming/download/{'f' * 32}"
    (
        (unknown_code, _, unknown_err),
        (nobody_code, _, nobody_err),
        (bad_code, _, bad_err),
    ) = await asyncio.gather(
        run("get", unknown), run("tail", nobody), run("status", "ws://host/not/a/reference")
    )
    assert (unknown_code, nobody_code, bad_code) == (1, 1, 2)
    assert one_line(unknown_err) == f"livefile: Unknown resource {'f' * 32}"
    assert one_line(nobody_err).startswith("livefile: Cannot connect")
    assert one_line(bad_err).startswith("livefile: Not a livefile reference")


# In-process from here on: the command host and handlers as above, without a process start.


def test_tail_c_starts_that_many_bytes_before_the_end(
    server: LivefileProcess, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    reference = asyncio.run(upload(server.ws_url, b"0123456789"))
    assert main(["tail", "-c", "4", reference]) == 0
    assert capfdbinary.readouterr().out == b"6789"


def test_tail_n_starts_that_many_lines_before_the_end(
    server: LivefileProcess, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    text = b"".join(f"line {n}\n".encode() for n in range(10))
    reference = asyncio.run(
        upload(server.ws_url, text, mime_type="text/plain", supports_line_access=True)
    )
    assert main(["tail", "-n", "2", reference]) == 0
    assert capfdbinary.readouterr().out == b"line 8\nline 9\n"


def test_lines_prints_the_requested_lines(
    server: LivefileProcess, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    reference = asyncio.run(
        upload(server.ws_url, b"a\nb\nc\nd", mime_type="text/plain", supports_line_access=True)
    )
    assert main(["lines", reference, "--start", "1", "--count", "3"]) == 0
    assert capfdbinary.readouterr().out == b"b\nc\nd"


def test_a_bare_id_is_read_on_the_server_given_by_server_or_livefile_server(
    server: LivefileProcess,
    capfdbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference = asyncio.run(upload(server.ws_url, b"abc"))
    resource_id = reference.rsplit("/", 1)[1]
    assert main(["status", resource_id, "--server", server.http_url]) == 0
    assert json.loads(capfdbinary.readouterr().out)["currentSize"] == 3
    monkeypatch.setenv("LIVEFILE_SERVER", f"127.0.0.1:{server.port}")
    assert main(["get", resource_id]) == 0
    assert capfdbinary.readouterr().out == b"abc"


def test_something_neither_a_reference_nor_an_id_is_a_usage_error(
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    assert main(["status", "1234", "--server", "ws://127.0.0.1:1"]) == 2
    assert capfdbinary.readouterr().err == b"livefile: Not a livefile reference: '1234'\n"


def test_get_draws_a_bar_on_a_terminal_nothing_elsewhere_and_nothing_when_quiet(
    server: LivefileProcess, tmp_path: Path
) -> None:
    reference = asyncio.run(upload(server.ws_url, os.urandom(3_000_000)))
    target = str(tmp_path / "copy.bin")
    code, _, shown = run_with_terminal_stderr([*LIVEFILE, "get", reference, "-o", target])
    assert code == 0, shown
    final = shown.decode().replace("\r\n", "\n").split("\r")[-1]
    assert re.fullmatch(
        r"100%\|█+\| 3\.00MB/3\.00MB \[\d\d:\d\d<\d\d:\d\d, [\d.]+[kMG]?B/s\]\n", final
    ), shown
    assert run_with_terminal_stderr([*LIVEFILE, "get", reference, "-o", target, "--quiet"]) == (
        0, b"", b"",
    )  # fmt: skip
    # Standard error not a terminal: nothing, unless asked for.
    plain = subprocess.run([*LIVEFILE, "get", reference, "-o", target], capture_output=True)
    assert (plain.returncode, plain.stderr) == (0, b"")
    forced = subprocess.run(
        [*LIVEFILE, "get", reference, "-o", target, "--progress"], capture_output=True
    )
    assert forced.returncode == 0
    assert forced.stderr.split(b"\r")[-1].startswith(b"100%|")


async def test_get_of_a_growing_resource_shows_the_percent_once_its_size_is_final(
    server: LivefileProcess,
) -> None:
    async with RawUpload(server.ws_url) as raw:
        await raw.write(b"x" * 100_000)
        get = await asyncio.create_subprocess_exec(
            *LIVEFILE, "get", raw.reference, "--progress", stdout=PIPE, stderr=PIPE
        )
        assert get.stderr is not None
        # The bar as drawn while the resource grows: its size is not known, so no percent.
        first = await asyncio.wait_for(get.stderr.readuntil(b"]"), WAIT)
        assert re.fullmatch(rb"\r\d+(\.\d+)?[k]?B \[00:00, .*B/s\]", first), first
        await raw.trickle(b"y" * 100_000, seconds=0.5)
        await raw.finish()
        stdout, stderr = await asyncio.wait_for(get.communicate(), WAIT)
    assert get.returncode == 0, stderr
    assert len(stdout) == 200_000
    updates = stderr.decode().split("\r")
    assert re.fullmatch(r"100%\|█+\| 200kB/200kB \[.*\]\n", updates[-1]), stderr
