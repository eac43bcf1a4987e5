"""The README's code blocks are true: every Python block runs as it stands against a real
server, and every block that does not is marked as a fragment.

A fragment is a block right after an HTML comment starting ``<!-- fragment`` (invisible on a
rendered page): commands with placeholders such as ``<id>``. The other ``sh`` blocks are
runnable as they stand but not run here (they install things, start servers, run this suite
or the benchmarks); they are checked for what breaks them as written.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server import LivefileProcess

README = Path(__file__).resolve().parent.parent / "README.md"
DEFAULT_SERVER = "ws://127.0.0.1:8080"
BLOCK = re.compile(r"^```(?P<language>\w*)\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int
    fragment: bool

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language})"


def blocks() -> list[Block]:
    text = README.read_text()
    found = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        found.append(
            Block(
                match["language"],
                match["code"],
                text.count("\n", 0, match.start()) + 1,
                before.startswith("<!-- fragment"),
            )
        )
    return found


RUNNABLE_PYTHON = [block for block in blocks() if block.language == "python" and not block.fragment]
SHELL = [block for block in blocks() if block.language == "sh"]


def test_every_block_is_python_or_sh_and_the_runnable_python_is_there() -> None:
    assert {block.language for block in blocks()} == {"python", "sh"}
    assert len(RUNNABLE_PYTHON) >= 2  # the upload and the download SDK


@pytest.mark.parametrize("block", RUNNABLE_PYTHON, ids=str)
def test_python_block_runs_as_it_stands(
    block: Block, server: LivefileProcess, tmp_path: Path
) -> None:
    """Run in an empty folder, with the test server in place of the default address."""
    script = tmp_path / "snippet.py"
    script.write_text(block.code.replace(DEFAULT_SERVER, server.ws_url))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{block} failed:\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("block", SHELL, ids=str)
def test_sh_block_has_no_placeholder_unless_a_fragment_and_quotes_its_query_strings(
    block: Block,
) -> None:
    commands = [line.split(" #", 1)[0] for line in block.code.splitlines()]
    if not block.fragment:
        assert not any(re.search(r"<\w+>", line) for line in commands), block
    # An unquoted "?" is a glob: zsh stops with "no matches found".
    for line in commands:
        for word in re.finditer(r"\S*\?\S*", line):
            assert word[0][0] in "'\"", f"{block}: quote {word[0]}"
