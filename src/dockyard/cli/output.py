"""Docker's ways of printing: human sizes and durations, tab-aligned tables, JSON lines."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from dockyard import gojson
from dockyard.units import human_duration, human_size

__all__ = ["go_time_string", "human_duration", "human_size", "indented_json", "json_line", "since", "table"]


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
