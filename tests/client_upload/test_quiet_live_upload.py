"""``livefile upload --live`` of a file (or ``livefile upload -`` of a pipe) that stays quiet,
against a server with a short idle timeout (issue 14, item 9): the SDK keeps the upload alive,
a client that is truly gone still fails, and an end decided by the server is reported at once
while the source is quiet."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client_upload.test_upload_cli import LIVEFILE
from tests.client_upload.watch import wait_for_end, wait_for_status
from tests.conftest import ServerFactory
from tests.support.server import LivefileProcess
from tests.support.wire import download

IDLE_TIMEOUT = 3.0
WAIT = 30.0


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivefileProcess]:
    """One server with the short idle timeout for the tests that leave it running: each
    uploads its own resource (the tests that stop the server start their own)."""
    server = LivefileProcess(
        tmp_path_factory.mktemp("quiet") / "data", "--upload-idle-timeout", str(IDLE_TIMEOUT)
    ).start()
    yield server
    server.kill()


def start_live_upload(path: Path, ws_url: str, *options: str) -> tuple[subprocess.Popen[str], str]:
    """The CLI following ``path``, and the resource id from the reference it prints first."""
    process = subprocess.Popen(
        [*LIVEFILE, "upload", str(path), "--server", ws_url, "--live", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    reference = process.stdout.readline().strip()
    assert reference, process.communicate(timeout=WAIT)
    return process, reference.rsplit("/", 1)[1]


def exit_within(process: subprocess.Popen[str], seconds: float) -> tuple[str, str, float]:
    """Wait for ``process`` to exit; its output and how long it took."""
    started = time.monotonic()
    stdout, stderr = process.communicate(timeout=WAIT)
    took = time.monotonic() - started
    assert took < seconds, f"the CLI took {took:.1f} s to exit: {stderr}"
    return stdout, stderr, took


async def test_quiet_live_upload_outlives_the_idle_timeout_and_completes(
    quiet_server: LivefileProcess, tmp_path: Path
) -> None:
    server = quiet_server
    path = tmp_path / "app.log"
    path.write_bytes(b"started\n")
    process, resource_id = start_live_upload(path, server.ws_url)
    try:
        await wait_for_status(server.ws_url, resource_id, lambda s: s["currentSize"] == 8)
        # Three idle timeouts of silence from the file: the resource must not end.
        ended = asyncio.create_task(wait_for_end(server.ws_url, resource_id))
        done, _ = await asyncio.wait({ended}, timeout=3 * IDLE_TIMEOUT)
        assert not done, f"the quiet upload ended: {ended.result()}"
        ended.cancel()
        assert process.poll() is None, process.communicate()
        with path.open("ab") as log:
            log.write(b"finished\n")
        await wait_for_status(server.ws_url, resource_id, lambda s: s["currentSize"] == 17)
        process.send_signal(signal.SIGTERM)
        stdout, stderr, _ = exit_within(process, WAIT)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert json.loads(stdout.splitlines()[-1])["status"]["transferStatus"] == "COMPLETED"
    assert await download(server.ws_url, resource_id) == b"started\nfinished\n"


async def test_without_resume_a_killed_server_is_reported_at_once_while_the_file_is_quiet(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server("--upload-idle-timeout", str(IDLE_TIMEOUT))
    path = tmp_path / "app.log"
    path.write_bytes(b"started\n")
    process, resource_id = start_live_upload(path, server.ws_url, "--resume-for", "0")
    try:
        await wait_for_status(server.ws_url, resource_id, lambda s: s["currentSize"] == 8)
        server.kill()
        _, stderr, _ = exit_within(process, 1.5)
    finally:
        process.kill()
    assert process.returncode == 1, stderr
    assert "upload failed" in stderr


async def test_without_resume_a_server_shutdown_is_reported_at_once_while_the_file_is_quiet(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server("--upload-idle-timeout", str(IDLE_TIMEOUT))
    path = tmp_path / "app.log"
    path.write_bytes(b"started\n")
    process, resource_id = start_live_upload(path, server.ws_url, "--resume-for", "0")
    try:
        await wait_for_status(server.ws_url, resource_id, lambda s: s["currentSize"] == 8)
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        _, stderr, _ = exit_within(process, 1.5)
    finally:
        process.kill()
    assert process.returncode == 1, stderr
    assert "upload failed" in stderr


async def test_an_uploader_that_is_truly_gone_still_fails_after_the_idle_timeout(
    quiet_server: LivefileProcess, tmp_path: Path
) -> None:
    """A stopped uploader keeps its TCP connection (the kernel still answers) but sends
    nothing, keep-alives included, and answers no ping: the server fails its upload after the
    idle timeout; once it runs again it reports that end at once."""
    server = quiet_server
    path = tmp_path / "app.log"
    path.write_bytes(b"started\n")
    process, resource_id = start_live_upload(path, server.ws_url)
    try:
        await wait_for_status(server.ws_url, resource_id, lambda s: s["currentSize"] == 8)
        process.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        end = await asyncio.wait_for(wait_for_end(server.ws_url, resource_id), WAIT)
        assert end["transferStatus"] == "FAILED"
        assert time.monotonic() - stopped_at < 2 * IDLE_TIMEOUT
        process.send_signal(signal.SIGCONT)
        _, stderr, _ = exit_within(process, 2.0)
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
    assert process.returncode == 1, stderr
    assert f"No data for {IDLE_TIMEOUT:g} s" in stderr


def start_pipe_upload(ws_url: str, *options: str) -> tuple[subprocess.Popen[str], str]:
    """The CLI reading its standard input (a pipe the test writes), and the resource id."""
    process = subprocess.Popen(
        [*LIVEFILE, "upload", "-", "--filename", "ci.log", "--server", ws_url, *options],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    reference = process.stdout.readline().strip()
    assert reference, process.communicate(timeout=WAIT)
    return process, reference.rsplit("/", 1)[1]


async def test_quiet_pipe_outlives_the_idle_timeout_and_completes(
    quiet_server: LivefileProcess,
) -> None:
    """A CI step that prints nothing for longer than the idle timeout keeps its log."""
    server = quiet_server
    process, resource_id = start_pipe_upload(server.ws_url)
    assert process.stdin is not None
    try:
        process.stdin.write("step 1\n")
        process.stdin.flush()
        await wait_for_status(server.ws_url, resource_id, lambda s: s["currentSize"] == 7)
        ended = asyncio.create_task(wait_for_end(server.ws_url, resource_id))
        done, _ = await asyncio.wait({ended}, timeout=3 * IDLE_TIMEOUT)
        assert not done, f"the quiet upload ended: {ended.result()}"
        ended.cancel()
        stdout, stderr = process.communicate("step 2\n", timeout=WAIT)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert json.loads(stdout.splitlines()[-1])["status"]["transferStatus"] == "COMPLETED"
    assert await download(server.ws_url, resource_id) == b"step 1\nstep 2\n"


async def test_without_resume_a_killed_server_is_reported_at_once_while_the_pipe_is_quiet(
    start_server: ServerFactory,
) -> None:
    server = start_server("--upload-idle-timeout", str(IDLE_TIMEOUT))
    process, resource_id = start_pipe_upload(server.ws_url, "--resume-for", "0")
    assert process.stdin is not None
    try:
        process.stdin.write("step 1\n")
        process.stdin.flush()
        await wait_for_status(server.ws_url, resource_id, lambda s: s["currentSize"] == 7)
        server.kill()
        started = time.monotonic()
        # The pipe stays open (the step still runs): the CLI must not wait for it.
        while process.poll() is None:
            assert time.monotonic() - started < 1.5, "the CLI did not report the server's end"
            await asyncio.sleep(0.05)
        assert process.stderr is not None
        stderr = process.stderr.read()
    finally:
        process.kill()
    assert process.returncode == 1, stderr
    assert "upload failed" in stderr
