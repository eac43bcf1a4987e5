"""Run every benchmark, print one table, write the raw figures to JSON, render the report.

    uv run python -m bench                      # everything, 3 runs each (takes a while)
    uv run python -m bench --quick --runs 1     # smoke run, tiny sizes, into bench/results/quick/
    uv run python -m bench --only upload_throughput,latency

Each module ``bench/<name>.py`` in MODULES exposes ``async def measure(runs, quick) ->
list[Result]``; peers and baselines are started on loopback by the module and stopped at its
end. A module that is missing is skipped; one that fails is reported and the others still run.
The JSON file is rewritten after each module, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.report import HEADER, default_json, default_report, table_rows
from bench.support import SCRATCH, Result

MODULES = [
    "limits",
    "upload_throughput",
    "tus",
    "http_download",
    "range_reads",
    "latency",
    "idle_watchers",
    "small_files",
    "lines",
    "fanout",
    "repack",
    "transfer",
    "bundle",
    "images",
]
PACKAGES = ["uvicorn", "websockets", "fastapi", "starlette", "uvloop", "httptools", "redis"]


def _command_output(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return (done.stdout + done.stderr).strip()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_machine() -> dict[str, Any]:
    from bench.limits import filesystem_of

    SCRATCH.mkdir(parents=True, exist_ok=True)
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": f"{platform.system()} {platform.release()}",
        "os": _command_output(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "nginx": _command_output([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
        "node": _command_output(["node", "--version"]),
        "redis": _command_output(["redis-server", "--version"]),
        "scratch": f"{SCRATCH} ({filesystem_of(SCRATCH)})",
    }


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    numeric = {2, 5, 6}
    lines = []
    for row in [HEADER, ["-" * width for width in widths], *rows]:
        cells = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median), default 3")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--only", help=f"comma-separated modules among: {', '.join(MODULES)}")
    parser.add_argument(
        "--json",
        help=f"raw figures (JSON); default {default_json(False)},"
        f" {default_json(True)} with --quick",
    )
    parser.add_argument(
        "--report",
        help=f"markdown report and its plots; default {default_report(False)},"
        f" {default_report(True)} with --quick (the committed report stays as it is)",
    )
    parser.add_argument("--no-report", action="store_true", help="do not render the report")
    parser.add_argument(
        "--keep-scratch", action="store_true", help=f"keep the test files in {SCRATCH}"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in names if name not in MODULES]
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(MODULES)}")
        args.modules = [name for name in MODULES if name in names]
    else:
        args.modules = list(MODULES)
    args.json = Path(args.json) if args.json else default_json(args.quick)
    args.report = Path(args.report) if args.report else default_report(args.quick)
    return args


async def run_module(name: str, runs: int, quick: bool) -> tuple[list[Result], dict[str, Any]]:
    """Import and run one module; never raises (a failure is reported in the status)."""
    status: dict[str, Any] = {"name": name, "status": "ok", "seconds": 0.0, "error": None}
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"bench.{name}":
            status["status"] = "missing"
            return [], status
        status["status"], status["error"] = "error", traceback.format_exc()
        return [], status
    measure = getattr(module, "measure", None)
    if measure is None:
        status["status"], status["error"] = "error", "the module has no measure(runs, quick)"
        return [], status
    started = time.monotonic()
    try:
        results: list[Result] = await measure(runs, quick)
    except Exception:
        status["status"], status["error"] = "error", traceback.format_exc()
        results = []
    status["seconds"] = round(time.monotonic() - started, 1)
    return results, status


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=1, allow_nan=True) + "\n")
    temporary.replace(path)


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    json_path: Path = args.json
    document: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["uv", "run", "python", "-m", "bench", *argv]),
        "runs": args.runs,
        "quick": args.quick,
        "machine": describe_machine(),
        "modules": [],
        "results": [],
    }
    print(f"benchmarks: {', '.join(args.modules)}  (runs {args.runs}, quick {args.quick})")
    for name in args.modules:
        print(f"\n== {name}", flush=True)
        results, status = await run_module(name, args.runs, args.quick)
        document["modules"].append(status)
        rows = [{"module": name, **result.to_json()} for result in results]
        document["results"].extend(rows)
        write_json(json_path, document)
        if status["status"] == "missing":
            print("   not present: skipped")
        elif status["error"]:
            print(f"   FAILED after {status['seconds']} s:\n{status['error']}", file=sys.stderr)
        else:
            print(format_table(table_rows(rows)))
            print(f"   ({status['seconds']} s)")
    print("\n== all results")
    print(format_table(table_rows(document["results"])))
    print(f"\nraw figures: {json_path}")
    if not args.no_report:
        from bench.report import render

        report = render(document, args.report)
        print(f"report: {report}")
    if not args.keep_scratch:
        for source in SCRATCH.glob("source-*.bin"):
            source.unlink(missing_ok=True)
    failed = [module["name"] for module in document["modules"] if module["status"] == "error"]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
