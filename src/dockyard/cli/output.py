"""Docker's ways of printing: human sizes and durations, tab-aligned tables, JSON lines."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

from dockyard import gojson

_UNITS = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]


def human_size(size: float, precision: int = 3) -> str:
    """go-units HumanSizeWithPrecision (decimal units)."""
    i = 0
    while size >= 1000.0 and i < len(_UNITS) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.{precision}g}{_UNITS[i]}"


def human_duration(seconds: float) -> str:
    """go-units HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = math.floor(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def since(ns: int) -> str:
    if ns <= 0:
        return "N/A"
    return human_duration(time.time() - ns / 1e9) + " ago"


def go_time_string(ns: int) -> str:
    """Go's ``time.Time.String()`` in UTC: ``2006-01-02 15:04:05 +0000 UTC``."""
    import datetime as dt

    t = dt.datetime.fromtimestamp(ns // 1_000_000_000, tz=dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, out: Any = None) -> None:
    """tabwriter(minwidth 10, padding 3) as the docker CLI formats its tables."""
    out = out or sys.stdout
    widths = [max(10, len(h) + 3) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell) + 3)
    lines = [headers, *rows]
    for row in lines:
        parts = []
        for i, cell in enumerate(row):
            parts.append(cell if i == len(row) - 1 else cell.ljust(widths[i]))
        out.write("".join(parts).rstrip() + "\n")


def json_line(obj: dict[str, Any], *, out: Any = None) -> None:
    """One JSON object per line, keys sorted, Go escaping (docker's ``--format json``)."""
    (out or sys.stdout).write(gojson.marshal(obj, sort_keys=True) + "\n")


def indented_json(obj: Any, *, out: Any = None) -> None:
    """docker inspect's 4-space indented JSON (Go escaping kept)."""
    compact = gojson.marshal(obj)
    pretty = json.dumps(json.loads(compact), indent=4, ensure_ascii=False)
    # json.dumps would undo Go's HTML escaping; put it back.
    pretty = pretty.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    (out or sys.stdout).write(pretty + "\n")
