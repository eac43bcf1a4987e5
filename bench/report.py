"""Render docs/benchmarks.md and its plots (docs/benchmarks/*.png) from the JSON file that
``python -m bench`` writes:

    uv run python -m bench.report bench-results.json [--report docs/benchmarks.md]

A quick run (``--quick``) is rendered to bench/results/quick/ unless ``--report`` says otherwise.

Plots: throughput against size for every result whose series has ``throughput_vs_size``
(``{"group": ..., "size_mib": ...}``; subject and baseline become two lines, with the physical
limits of the same run drawn across), and latency distributions (CDF and box plot) for every
result whose series has ``latency_samples_ms``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if value != value:  # NaN
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """The printed (and rendered) table: one row per result, from Result.to_json()."""
    rows = []
    for result in results:
        met = result["met"]
        rows.append(
            [
                result["benchmark"],
                result["subject"],
                _number(result["value"]),
                result["unit"],
                result["baseline"] or "",
                _number(result["baseline_value"]),
                _number(result["ratio"]),
                result["target_text"]
                or ("" if result["target"] is None else str(result["target"])),
                "" if met is None else ("yes" if met else "NO"),
            ]
        )
    return rows


HEADER = [
    "benchmark",
    "subject",
    "median",
    "unit",
    "baseline",
    "baseline median",
    "ratio",
    "target",
    "met",
]


LIMIT_LINES = {  # benchmark-name prefixes of bench.limits results drawn on throughput plots
    "limit: loopback TCP": "loopback TCP (limit)",
    "limit: data directory sequential write": "data directory write (limit)",
}


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(text) for text in row) + " |" for row in rows]
    return "\n".join(lines)


def _all_runs(result: dict[str, Any]) -> list[list[float]]:
    return [runs for runs in (result["runs"], result["baseline_runs"]) if runs]


def _spread(runs: list[float], value: float) -> tuple[float, float]:
    return value - min(runs), max(runs) - value


def plot_throughput(results: list[dict[str, Any]], folder: Path) -> list[tuple[str, Path]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        point = result["series"].get("throughput_vs_size")
        if point:
            groups[point["group"]].append(result)
    limits = {
        label: result["value"]
        for result in results
        for prefix, label in LIMIT_LINES.items()
        if result["benchmark"].startswith(prefix)
    }
    plots = []
    for group, members in groups.items():
        members.sort(key=lambda result: result["series"]["throughput_vs_size"]["size_mib"])
        figure, axes = plt.subplots(figsize=(8, 4.8))
        lines: dict[str, tuple[list[float], list[float], list[tuple[float, float]]]] = {}
        for result in members:
            size = result["series"]["throughput_vs_size"]["size_mib"]
            pairs = [(result["subject"], result["runs"], result["value"])]
            if result["baseline"]:
                pairs.append(
                    (result["baseline"], result["baseline_runs"], result["baseline_value"])
                )
            for name, runs, value in pairs:
                xs, ys, errors = lines.setdefault(name, ([], [], []))
                xs.append(size)
                ys.append(value)
                errors.append(_spread(runs, value))
        for name, (xs, ys, errors) in lines.items():
            axes.errorbar(
                xs, ys, yerr=list(zip(*errors, strict=True)), marker="o", capsize=4, label=name
            )
        top = max(max(runs) for result in members for runs in _all_runs(result))
        off_chart = []
        for (label, value), style in zip(limits.items(), (":", "-."), strict=False):
            if value <= 1.5 * top:  # a limit far above the data would flatten the lines
                axes.axhline(value, color="grey", linestyle=style, label=f"{label}: {value:,.0f}")
            else:
                off_chart.append(f"{label.replace(' (limit)', '')} {value:,.0f}")
        axes.set_xscale("log", base=2)
        sizes = sorted({x for xs, _, _ in lines.values() for x in xs})
        axes.set_xticks(sizes, [f"{x / 1024:g} GiB" if x >= 1024 else f"{x:g} MiB" for x in sizes])
        axes.set_ylim(bottom=0)
        axes.set_xlabel("size")
        axes.set_ylabel(f"{members[0]['unit']} (median, bars: min-max of runs)")
        title = f"{group} throughput against size"
        if off_chart:
            title += f"\nlimits in this run: {', '.join(off_chart)} {members[0]['unit']}"
        axes.set_title(title, fontsize="medium")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        path = folder / f"{group.replace(' ', '_')}_throughput.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        plots.append((f"{group} throughput against size", path))
    return plots


def plot_latency(results: list[dict[str, Any]], folder: Path) -> list[tuple[str, Path]]:
    series = [
        (f"{result['benchmark']} — {result['subject']}", result["series"]["latency_samples_ms"])
        for result in results
        if result["series"].get("latency_samples_ms")
    ]
    if not series:
        return []
    labels = [_short(label) for label, _ in series]
    figure, axes = plt.subplots(figsize=(9, 5))
    for label, (_, samples) in zip(labels, series, strict=True):
        ordered = sorted(samples)
        fraction = [(i + 1) / len(ordered) for i in range(len(ordered))]
        axes.step(ordered, fraction, where="post", label=label)
    axes.set_xscale("symlog", linthresh=1)  # fan-out latencies may be slightly negative
    axes.set_xlabel("latency, ms (linear below 1 ms, logarithmic above)")
    axes.set_ylabel("fraction of samples at or below")
    axes.set_title("latency distributions (CDF)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize="x-small", loc="lower right")
    figure.tight_layout()
    cdf = folder / "latency_cdf.png"
    figure.savefig(cdf, dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(11, 1.2 + 0.6 * len(series)))
    axes.boxplot(
        [samples for _, samples in series],
        orientation="horizontal",
        whis=(1, 99),
        showfliers=False,
        tick_labels=labels,
    )
    axes.set_xlabel("latency, ms (box: p25-p75, whiskers: p1-p99)")
    axes.set_title("latency distributions")
    axes.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    box = folder / "latency_box.png"
    figure.savefig(box, dpi=110)
    plt.close(figure)
    return [("latency distributions (CDF)", cdf), ("latency distributions (box plot)", box)]


def _short(label: str) -> str:
    for long, short in (
        ("live-tail latency, write -> follower receipt, ", "live tail, "),
        ("checkpoint interval ", "interval "),
        ("status fan-out: ", "fan-out: "),
        (", status latency p95", ""),
        (", p95", ""),
    ):
        label = label.replace(long, short)
    return label if len(label) <= 70 else label[:67] + "..."


def render(document: dict[str, Any], report: Path) -> Path:
    """Write the markdown report and its plots (next to it, in a folder of the same stem)."""
    folder = report.parent / report.stem
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    results: list[dict[str, Any]] = document["results"]
    plots = plot_throughput(results, folder) + plot_latency(results, folder)
    machine = document["machine"]
    out: list[str] = ["# Benchmarks", ""]
    if document.get("quick"):
        out += [
            "> **Quick smoke run** (`--quick`): tiny sizes and few samples, made to check that"
            " the harness works end to end. These figures say nothing about performance; run"
            " the full benchmark (without `--quick`) for real ones.",
            "",
        ]
    out += [
        f"Measured on {document['date']} with:",
        "",
        "```sh",
        document["command"],
        "```",
        "",
        f"Each figure is the median of {document['runs']} run(s). Every ratio compares the"
        " subject with a baseline measured in the same run, interleaved, and is oriented so"
        " that above 1 is better than the baseline (for times and memory it is"
        " baseline / subject). A target with a baseline is a ratio; without one it is the"
        " figure itself. The raw figures, every run and the plotted samples are in the JSON"
        " file the command writes (`bench-results.json`); `uv run python -m bench.report"
        " bench-results.json` renders this page again from it.",
        "",
        "## Machine",
        "",
    ]
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    out.append(
        _markdown_table(
            ["", ""],
            [
                ["CPU", f"{machine['cpu']}, {machine['cores']} cores"],
                ["memory", f"{machine['memory_gib']} GiB"],
                ["OS, kernel", f"{machine['os']}, {machine['kernel']}"],
                ["Python", machine["python"]],
                ["packages", packages],
                ["nginx", machine["nginx"]],
                ["node", machine["node"]],
                ["redis", machine["redis"]],
                ["data directories", machine["scratch"]],
            ],
        )
    )
    out += ["", "## Results", ""]
    out.append(_markdown_table(HEADER, _bold_misses(table_rows(results))))
    out += ["", "## Targets", ""]
    with_target = [result for result in results if result["met"] is not None]
    missed = [result for result in with_target if not result["met"]]
    out.append(
        f"{len(with_target) - len(missed)} of {len(with_target)} targets met"
        + (" (quick smoke run: not meaningful)." if document.get("quick") else ".")
    )
    out.append("")
    for result in with_target:
        verdict = "met" if result["met"] else "**missed**"
        measured = (
            f"ratio {_fmt(result['ratio'])}"
            if result["baseline_runs"]
            else f"{_fmt(result['value'])} {result['unit']}"
        )
        out.append(
            f"- {result['benchmark']} ({result['subject']}): target {result['target_text']},"
            f" measured {measured}: {verdict}"
        )
    failed = [module for module in document["modules"] if module["status"] != "ok"]
    if failed:
        out += ["", "Not measured:", ""]
        for module in failed:
            why = "module not present" if module["status"] == "missing" else "failed"
            out.append(f"- `bench.{module['name']}`: {why}")
    if plots:
        out += ["", "## Plots", ""]
        for title, path in plots:
            relative = os.path.relpath(path, report.parent)
            out += [f"![{title}]({relative})", ""]
    notes = [result for result in results if result["notes"]]
    if notes:
        out += ["## Notes", ""]
        out += [f"- {r['benchmark']} ({r['subject']}): {r['notes']}" for r in notes]
        out.append("")
    out += ["## Modules", ""]
    out.append(
        _markdown_table(
            ["module", "status", "seconds"],
            [
                [f"`bench.{module['name']}`", module["status"], f"{module['seconds']:g}"]
                for module in document["modules"]
            ],
        )
    )
    out.append("")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(out))
    return report


COMMITTED_REPORT = Path("docs/benchmarks.md")
COMMITTED_JSON = Path("bench-results.json")
QUICK_FOLDER = Path("bench/results/quick")  # git-ignored


def default_report(quick: bool) -> Path:
    """Where a run's report goes unless told: a quick run's figures say nothing about
    performance, so it never replaces the committed report and plots."""
    return QUICK_FOLDER / "benchmarks.md" if quick else COMMITTED_REPORT


def default_json(quick: bool) -> Path:
    """Where a run's raw figures go unless told; a quick run keeps the full run's JSON."""
    return QUICK_FOLDER / "bench-results.json" if quick else COMMITTED_JSON


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _bold_misses(rows: list[list[str]]) -> list[list[str]]:
    return [[*row[:-1], "**no**" if row[-1] == "NO" else row[-1]] for row in rows]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("json", nargs="?", default="bench-results.json")
    parser.add_argument(
        "--report", help=f"default {COMMITTED_REPORT}, or {QUICK_FOLDER}/ for a --quick run"
    )
    args = parser.parse_args(argv)
    document = json.loads(Path(args.json).read_text())
    report = Path(args.report) if args.report else default_report(bool(document.get("quick")))
    print(render(document, report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
