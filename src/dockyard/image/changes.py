"""Dockerfile instructions applied to a container config (``import --change``, ``commit -c``).

Supported as docker does for import/commit: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER,
VOLUME, WORKDIR, STOPSIGNAL. Shell forms become ``/bin/sh -c``.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from typing import Any

from dockyard.errors import InvalidInput

ALLOWED = (
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "USER",
    "VOLUME",
    "WORKDIR",
    "STOPSIGNAL",
)


def _json_or_shell(rest: str) -> tuple[list[str], bool]:
    s = rest.strip()
    if s.startswith("["):
        try:
            v = json.loads(s)
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return v, True
        except ValueError:
            pass
    return ["/bin/sh", "-c", s], False


def _pairs(rest: str, what: str) -> list[tuple[str, str]]:
    s = rest.strip()
    try:
        words = shlex.split(s, posix=True)
    except ValueError as e:
        raise InvalidInput(f"{what}: {e}") from None
    if words and "=" not in words[0]:
        # legacy form: KEY value with spaces
        key, _, value = s.partition(" ")
        return [(key, value.strip())]
    out = []
    for w in words:
        if "=" not in w:
            raise InvalidInput(f"{what} names must be followed by '=': {w!r}")
        k, _, v = w.partition("=")
        if not k:
            raise InvalidInput(f"{what}: empty name in {w!r}")
        out.append((k, v))
    return out


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    cfg = dict(config)
    for change in changes:
        line = change.strip()
        if not line:
            continue
        instr, _, rest = line.partition(" ")
        if "\t" in instr:
            instr, _, more = instr.partition("\t")
            rest = more + " " + rest
        op = instr.upper()
        if op not in ALLOWED:
            raise InvalidInput(f"{instr} is not a valid change command")
        if op == "CMD":
            cfg["Cmd"], _ = _json_or_shell(rest)
        elif op == "ENTRYPOINT":
            cfg["Entrypoint"], _ = _json_or_shell(rest)
            if "Cmd" in cfg and not config.get("_cmd_set"):
                pass
        elif op == "ENV":
            env = list(cfg.get("Env") or [])
            for k, v in _pairs(rest, "ENV"):
                env = [e for e in env if e.partition("=")[0] != k]
                env.append(f"{k}={v}")
            cfg["Env"] = env
        elif op == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            for k, v in _pairs(rest, "LABEL"):
                labels[k] = v
            cfg["Labels"] = labels
        elif op == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in rest.split():
                if "/" not in p:
                    p += "/tcp"
                ports[p] = {}
            cfg["ExposedPorts"] = ports
        elif op == "VOLUME":
            vols = dict(cfg.get("Volumes") or {})
            s = rest.strip()
            items: list[str]
            if s.startswith("["):
                try:
                    items = json.loads(s)
                except ValueError:
                    items = s.split()
            else:
                items = s.split()
            for v in items:
                if not v:
                    raise InvalidInput("VOLUME specified can not be an empty string")
                vols[v] = {}
            cfg["Volumes"] = vols
        elif op == "USER":
            cfg["User"] = rest.strip()
        elif op == "WORKDIR":
            w = rest.strip()
            cur = cfg.get("WorkingDir") or "/"
            cfg["WorkingDir"] = posixpath.normpath(posixpath.join(cur, w))
        elif op == "STOPSIGNAL":
            cfg["StopSignal"] = rest.strip()
        elif op == "ONBUILD":
            ob = list(cfg.get("OnBuild") or [])
            ob.append(rest.strip())
            cfg["OnBuild"] = ob
    return cfg
