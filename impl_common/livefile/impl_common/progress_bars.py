"""How the clients' progress bars look (they draw them with tqdm; this module imports none).

Sizes carry their unit ("4.2MB/10.0MB"), rates and time left come from tqdm. A pseudo-terminal
that nobody sized reports 0 columns and rows, where tqdm would draw nothing: it gets 80x24.
"""

from __future__ import annotations

import os
import sys
from typing import Any

KNOWN_SIZE = "{l_bar}{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
UNKNOWN_SIZE = "{n_fmt}B [{elapsed}, {rate_fmt}{postfix}]"


def bar_options(total: int | None) -> dict[str, Any]:
    """tqdm's arguments for a bar of ``total`` bytes (None: unknown) on standard error."""
    options: dict[str, Any] = {
        "total": total,
        "unit": "B",
        "unit_scale": True,
        "unit_divisor": 1000,
        "file": sys.stderr,
        "mininterval": 0.2,
        "bar_format": KNOWN_SIZE if total is not None else UNKNOWN_SIZE,
    }
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):  # not a terminal (--progress): tqdm's plain bar
        return options
    return options | ({"dynamic_ncols": True} if columns > 0 else {"ncols": 80, "nrows": 24})


def wants_progress(forced: bool, quiet: bool) -> bool:
    """A bar on a terminal, elsewhere only when asked for (``--progress``); never ``--quiet``."""
    return not quiet and (forced or sys.stderr.isatty())
