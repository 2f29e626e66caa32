"""JSON and time formatting exactly as Go's ``encoding/json`` and ``time`` write them.

Docker's files are written by Go. Where dockyard *creates* such bytes (a committed or imported
image config, ``repositories.json``, ``manifest.json`` of a save, tar-split lines) they must be
the bytes dockerd would write, because IDs are hashes of them. Configs read from an input are
never re-serialised.

Go (1.19, escapeHTML on) escapes ``"`` ``\\`` with a backslash, ``\\n`` ``\\r`` ``\\t`` in
short form, every other control character and ``<`` ``>`` ``&`` U+2028 U+2029 as ``\\u00XX``;
invalid UTF-8 becomes ``\\ufffd``. Non-ASCII text is written as UTF-8.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

_ESCAPE_RE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')
_ESCAPES: dict[str, str] = {chr(i): "\\u%04x" % i for i in range(0x20)}
_ESCAPES.update(
    {
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
        '"': '\\"',
        "\\": "\\\\",
        "<": "\\u003c",
        ">": "\\u003e",
        "&": "\\u0026",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    # Lone surrogates stand for bytes that were not UTF-8 (surrogateescape): Go writes U+FFFD.
    return _ESCAPES.get(c, "\\ufffd")


def go_string(s: str) -> str:
    """Quote ``s`` as Go's json.Marshal does (with HTML escaping)."""
    return '"' + _ESCAPE_RE.sub(_escape_char, s) + '"'


def marshal(obj: Any, *, sort_keys: bool = False, sort_all: bool = False) -> str:
    """Compact JSON like Go's json.Marshal of the same value.

    Mappings keep their insertion order (Go struct field order) unless ``sort_keys`` is set
    (top level sorted) or ``sort_all`` (every mapping is a Go map, sorted). Use :class:`GoMap`
    for a nested mapping that Go would sort.
    """
    parts: list[str] = []
    _encode(obj, parts, 2 if sort_all else (1 if sort_keys else 0))
    return "".join(parts)


class GoMap(dict[str, Any]):
    """A dict that Go encodes as a map: its keys are written sorted."""


def _encode(obj: Any, out: list[str], sort_keys: int) -> None:
    if isinstance(obj, str):
        out.append(go_string(obj))
    elif obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, float):
        out.append(_go_float(obj))
    elif isinstance(obj, Mapping):
        items = list(obj.items())
        if sort_keys or isinstance(obj, GoMap):
            items.sort(key=lambda kv: kv[0])
        out.append("{")
        first = True
        for k, v in items:
            if not first:
                out.append(",")
            first = False
            out.append(go_string(str(k)))
            out.append(":")
            _encode(v, out, 2 if sort_keys == 2 else 0)
        out.append("}")
    elif isinstance(obj, (bytes, bytearray)):
        import base64

        out.append('"' + base64.b64encode(bytes(obj)).decode() + '"')
    elif isinstance(obj, Sequence):
        out.append("[")
        for i, v in enumerate(obj):
            if i:
                out.append(",")
            _encode(v, out, 2 if sort_keys == 2 else 0)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def _go_float(f: float) -> str:
    # Go uses the shortest repr; integral floats have no ".0" and large ones use exponents.
    if f == int(f) and abs(f) < 1e21:
        return str(int(f))
    r = repr(f)
    return r.replace("e+", "e+").replace("e-0", "e-")


def marshal_image_config(obj: Mapping[str, Any]) -> bytes:
    """Bytes of an image config as Docker creates them (commit/import).

    ``Image.MarshalJSON`` round-trips through ``map[string]RawMessage``: top-level keys end up
    sorted, nested objects keep struct order.
    """
    return marshal(obj, sort_keys=True).encode("utf-8")


# ------------------------------------------------------------------------------------ time
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
ZERO_TIME = "0001-01-01T00:00:00Z"


def format_rfc3339nano(ns: int) -> str:
    """Go's ``time.Format(time.RFC3339Nano)`` of a UTC instant given in ns since the epoch.

    The fraction has its trailing zeros trimmed and is left out when zero.
    """
    sec, frac = divmod(ns, 1_000_000_000)
    t = _EPOCH + _dt.timedelta(seconds=sec)
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        base += "." + f"{frac:09d}".rstrip("0")
    return base + "Z"


_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(s: str) -> int:
    """Parse an RFC 3339 timestamp (any number of fraction digits) to ns since the epoch."""
    m = _RFC3339_RE.match(s)
    if not m:
        raise ValueError(f"invalid RFC 3339 time {s!r}")
    y, mo, d, h, mi, se, frac, tz = m.groups()
    t = _dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(se), tzinfo=_dt.UTC)
    ns = int((t - _EPOCH).total_seconds()) * 1_000_000_000
    if frac:
        ns += int((frac + "000000000")[:9])
    if tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        ns -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60) * 1_000_000_000
    return ns


def now_ns() -> int:
    import time

    return time.time_ns()
