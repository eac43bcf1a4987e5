"""``python -m bench --quick`` leaves the committed report (docs/benchmarks.md, its plots and
bench-results.json) as it is: a smoke run's figures say nothing about performance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import parse_args
from bench.report import main as report_main


def test_a_quick_run_writes_its_report_and_json_under_bench_results() -> None:
    args = parse_args(["--quick", "--runs", "1"])
    assert args.report == Path("bench/results/quick/benchmarks.md")
    assert args.json == Path("bench/results/quick/bench-results.json")


def test_a_full_run_renders_the_committed_report() -> None:
    args = parse_args([])
    assert (args.report, args.json) == (Path("docs/benchmarks.md"), Path("bench-results.json"))


def test_report_and_json_paths_given_on_the_command_line_win() -> None:
    args = parse_args(["--quick", "--report", "x/r.md", "--json", "x/r.json"])
    assert (args.report, args.json) == (Path("x/r.md"), Path("x/r.json"))


def test_rendering_a_quick_runs_json_again_does_not_touch_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    document: dict[str, Any] = {"date": "2026-01-01", "command": "python -m bench --quick"}
    keys = ["cpu", "cores", "memory_gib", "os", "kernel", "python", "nginx", "node", "redis"]
    machine: dict[str, Any] = {key: "-" for key in [*keys, "scratch"]} | {"packages": {}}
    document |= {"runs": 1, "quick": True, "machine": machine, "modules": [], "results": []}
    Path("quick.json").write_text(json.dumps(document))
    assert report_main(["quick.json"]) == 0
    assert capsys.readouterr().out.strip() == "bench/results/quick/benchmarks.md"
    assert Path("bench/results/quick/benchmarks.md").exists()
    assert not Path("docs").exists()
