"""``some-command | livefile upload - --filename test.log``: standard input (or a pipe such as
/dev/stdin) is uploaded as it arrives, so the resource can be followed while the pipe runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from livefile.client_upload import guess_mime_type
from tests.client_upload.watch import wait_for_status
from tests.support.server import LivefileProcess
from tests.support.wire import download, get_json

LIVEFILE = [sys.executable, "-m", "livefile.impl_common.cli"]


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
async def test_a_pipe_is_uploaded_as_it_arrives_and_followable_before_it_ends(
    server: LivefileProcess, name: str
) -> None:
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [*LIVEFILE, "upload", name, "--filename", "test.log", "--server", server.ws_url],
        stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    os.close(read_end)
    try:
        assert process.stdout is not None
        reference = process.stdout.readline().strip()  # at once, before any byte
        resource_id = reference.rsplit("/", 1)[1]
        os.write(write_end, b"make: step 1\n")
        # A watcher sees the first bytes while the writer has not closed the pipe.
        status = await wait_for_status(server.ws_url, resource_id, lambda s: s["currentSize"])
        assert (status["transferStatus"], status["currentSize"]) == ("IN_PROGRESS", 13)
        os.write(write_end, b"make: done\n")
    finally:
        os.close(write_end)  # the writer ends: end of file, the upload completes
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    result = json.loads(stdout.splitlines()[-1])
    assert result["status"] == {
        "transferStatus": "COMPLETED", "currentSize": 24, "numberOfLines": None,
    }  # fmt: skip
    assert await download(server.ws_url, resource_id) == b"make: step 1\nmake: done\n"


def test_a_shell_pipeline_uploads_standard_input_with_its_name(server: LivefileProcess) -> None:
    command = " ".join(LIVEFILE)
    result = subprocess.run(
        f"printf 'a\\nb\\n' | {command} upload - --filename test.log --lines"
        f" --server {server.ws_url}",
        shell=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout.splitlines()[-1])
    assert final["status"]["numberOfLines"] == 2
    _, info = get_json(f"{server.http_url}/resources/{final['resourceId']}")
    assert info["metadata"]["filename"] == "test.log"
    assert info["metadata"]["mimeType"] == guess_mime_type("test.log")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-"], "livefile: --filename is required to upload standard input (-)\n"),
        (["{tmp}"], "livefile: {tmp}: is a directory\n"),
        (["/dev/null"], "livefile: /dev/null: is not a regular file or pipe\n"),
        (["{tmp}/absent"], "livefile: {tmp}/absent: no such file\n"),
    ],
    ids=["stdin-without-filename", "directory", "device", "missing"],
)
def test_what_cannot_be_uploaded_is_a_usage_error_that_says_why(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [*LIVEFILE, "upload", *(arg.format(tmp=tmp_path) for arg in args)],
        stdin=subprocess.PIPE, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == message.format(tmp=tmp_path)


def test_a_named_pipe_needs_filename_and_is_then_read_to_its_end(
    server: LivefileProcess, tmp_path: Path
) -> None:
    fifo = tmp_path / "build.fifo"
    os.mkfifo(fifo)
    refused = subprocess.run(
        [*LIVEFILE, "upload", str(fifo)], capture_output=True, text=True, timeout=60
    )
    assert (refused.returncode, refused.stderr) == (
        2, f"livefile: --filename is required to upload a pipe ({fifo})\n",
    )  # fmt: skip
    process = subprocess.Popen(
        [*LIVEFILE, "upload", str(fifo), "--filename", "build.log", "--server", server.ws_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with fifo.open("wb") as writer:  # opens once the command opened its end
        writer.write(b"built\n")
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert json.loads(stdout.splitlines()[-1])["size"] == 6
