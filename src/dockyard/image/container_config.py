"""Container configs as Go's ``container.Config`` marshals them (field order, zero values, omitempty).

Used wherever dockyard writes or shows such a config: image inspect, commit, import, containers.
"""

from __future__ import annotations

from typing import Any

from dockyard import gojson

_CONTAINER_CONFIG_FIELDS: list[tuple[str, Any, bool]] = [
    # (name, zero value, omitempty) in Go's container.Config order
    ("Hostname", "", False),
    ("Domainname", "", False),
    ("User", "", False),
    ("AttachStdin", False, False),
    ("AttachStdout", False, False),
    ("AttachStderr", False, False),
    ("ExposedPorts", None, True),
    ("Tty", False, False),
    ("OpenStdin", False, False),
    ("StdinOnce", False, False),
    ("Env", None, False),
    ("Cmd", None, False),
    ("Healthcheck", None, True),
    ("ArgsEscaped", False, True),
    ("Image", "", False),
    ("Volumes", None, False),
    ("WorkingDir", "", False),
    ("Entrypoint", None, False),
    ("NetworkDisabled", False, True),
    ("MacAddress", "", True),
    ("OnBuild", None, False),
    ("Labels", None, False),
    ("StopSignal", "", True),
    ("StopTimeout", None, True),
    ("Shell", None, True),
]


def container_config(raw: Any) -> dict[str, Any] | None:
    """A config object as Go's container.Config marshals it (fields in order, zero values)."""
    if raw is None:
        return None
    src = raw if isinstance(raw, dict) else {}
    out: dict[str, Any] = {}
    for name, zero, omitempty in _CONTAINER_CONFIG_FIELDS:
        v = src.get(name, zero)
        if v is None and zero is not None:
            v = zero
        if omitempty and (v is None or v == zero or v == [] or v == {}):
            continue
        if isinstance(v, dict) and name in ("ExposedPorts", "Volumes", "Labels"):
            v = gojson.GoMap(v)
        out[name] = v
    return out
