"""docker/cli's formatter: ``--format`` strings (Go templates, ``table``, ``json``) over rows.

``write_rows`` is docker's ``formatter.Context.Write``: a ``table`` prefix means a header (the
template run on the column names with docker's header functions) and tab alignment through Go's
``text/tabwriter`` (minwidth 10, tabwidth 1, padding 3, no flags); ``json`` is ``{{json .}}``;
literal ``\\t`` and ``\\n`` in the format become tab and newline. ``inspect_format`` is
``docker inspect -f``. Other commands (network ls, volume ls, system df) can call ``write_rows``
with their rows as :class:`GoObject` s built by :func:`row`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dockyard import gojson
from dockyard import gotemplate as gt
from dockyard.errors import DockyardError


class FormatError(DockyardError):
    """A template that does not parse or execute: docker's text, docker's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def tabwriter(text: str, minwidth: int = 10, padding: int = 3) -> str:
    """Go's text/tabwriter (tabwidth 1, padchar ' ', flags 0) over complete text."""
    lines = [line.split("\t") for line in text.split("\n")]
    widths: dict[int, list[int]] = {}
    # column blocks: consecutive lines that have a tab-terminated cell in column c
    out_width: list[list[int]] = [[] for _ in lines]

    def fmt(line0: int, line1: int, col: int) -> None:
        this = line0
        while this < line1:
            if col >= len(lines[this]) - 1:
                this += 1
                continue
            start = this
            width = minwidth
            while this < line1 and col < len(lines[this]) - 1:
                w = len(lines[this][col]) + padding
                width = max(width, w)
                this += 1
            for k in range(start, this):
                out_width[k].append(width)
            fmt(start, this, col + 1)

    del widths
    fmt(0, len(lines), 0)
    out = []
    for cells, ws in zip(lines, out_width, strict=True):
        parts = []
        for j, c in enumerate(cells):
            parts.append(c + " " * (ws[j] - len(c)) if j < len(ws) else c)
        out.append("".join(parts))
    return "\n".join(out)


def row(type_name: str, values: Mapping[str, Any], methods: Mapping[str, Callable[..., Any]] | None = None
        ) -> gt.GoObject:
    """A formatter context row: each value is a method of ``type_name`` (as docker's contexts);
    ``{{json .}}`` gives the values as a map with sorted keys."""
    ms: dict[str, Callable[..., Any]] = {k: _const(v) for k, v in values.items()}
    ms.update(methods or {})
    # docker's contexts MarshalJSON with json.Marshal (HTML escaped, keys sorted)
    return gt.GoObject(type_name, methods=ms,
                       json=lambda: gt.RawJSON(gojson.marshal(dict(values), sort_keys=True)))


def _const(v: Any) -> Callable[[], Any]:
    return lambda: v


def _pre_format(fmt: str) -> tuple[str, bool]:
    table = fmt.startswith("table")
    if table:
        fmt = fmt[len("table"):]
    elif fmt == "json":
        fmt = "{{json .}}"
    fmt = fmt.strip(" ")
    return fmt.replace("\\t", "\t").replace("\\n", "\n"), table


def render_rows(fmt: str, rows: Sequence[Any], header: Mapping[str, str]) -> str:
    """docker's Context.Write; raises FormatError like docker ("template parsing error: ...")."""
    text, is_table = _pre_format(fmt)
    try:
        tmpl = gt.parse(text)
    except gt.TemplateError as e:
        raise FormatError("template parsing error: " + e.message) from None
    buf = []
    for r in rows:
        try:
            buf.append(tmpl.execute(r) + "\n")
        except gt.TemplateError as e:
            raise FormatError("template parsing error: " + e.message) from None
    body = "".join(buf)
    if not is_table:
        return body
    try:
        head = tmpl.execute(gt.string_map(header), funcs=gt.HEADER_FUNCS)
    except gt.TemplateError as e:
        head = e.partial
    return tabwriter(head + "\n" + body)


def write_rows(fmt: str, rows: Sequence[Any], header: Mapping[str, str], *, out: Any = None) -> None:
    (out or sys.stdout).write(render_rows(fmt, rows, header))


_MAP_FIELDS = {"Labels", "Volumes", "ExposedPorts", "Ports", "Options", "DriverOpts", "Networks",
               "Data", "Metadata", "Sysctls", "StorageOpt", "Tmpfs", "LogConfig.Config"}
_SLICE_FIELDS = {"Entrypoint", "Cmd", "Env", "OnBuild", "Shell", "RepoTags", "RepoDigests", "Layers",
                 "Mounts", "Binds", "Dns", "DnsOptions", "DnsSearch", "ExtraHosts", "CapAdd", "CapDrop",
                 "Links", "SecurityOpt", "Devices", "VolumesFrom", "GroupAdd", "Aliases", "Args",
                 "MaskedPaths", "ReadonlyPaths", "DeviceCgroupRules", "DeviceRequests", "Ulimits",
                 "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps",
                 "BlkioDeviceWriteIOps", "ConsoleSize", "Healthcheck.Test", "Test", "Log"}


def go_typed(obj: Any, key: str = "") -> Any:
    """Inspect JSON as the typed Go values docker's template sees: string lists are []string,
    a null slice prints [], a null map map[], a null pointer <nil>; objects keep their order."""
    if isinstance(obj, dict):
        return gt.OrderedMap((k, go_typed(v, k)) for k, v in obj.items())
    if isinstance(obj, list):
        if all(isinstance(x, str) for x in obj):
            return gt.StrList(obj)
        return [go_typed(x) for x in obj]
    if obj is None:
        if key in _SLICE_FIELDS:
            return gt.NIL_SLICE
        if key in _MAP_FIELDS:
            return gt.NIL_MAP
        return gt.NIL_PTR
    return obj


def inspect_format(fmt: str, objs: Sequence[Any], *, out: Any = None) -> None:
    """docker inspect -f: the template per object, a newline after each."""
    out = out or sys.stdout
    fmt = fmt.replace("\\t", "\t").replace("\\n", "\n") if False else fmt
    try:
        tmpl = gt.parse(fmt)
    except gt.TemplateError as e:
        raise FormatError("template parsing error: " + e.message, exit_code=64) from None
    for o in objs:
        try:
            text = tmpl.execute(go_typed(o), missingkey="error")
        except gt.TemplateError as e:
            out.write("\n")
            raise FormatError("template parsing error: " + e.message) from None
        out.write(text + "\n")
