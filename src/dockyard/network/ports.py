"""Docker's port publishing grammar and records.

``parse_spec`` follows go-connections' ``nat.ParsePortSpec`` (what the docker CLI runs on each ``-p``):
``[IP:][HOSTPORT:]CTRPORT[/PROTO]``, ranges on both sides, IPv6 addresses in brackets, and the same
error texts.  ``port_bindings`` builds hostconfig.json's ``PortBindings``; ``format_port`` prints a
``docker port`` line.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from dockyard.errors import InvalidInput

PROTOS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class Mapping:
    port: str  # "80/tcp"
    host_ip: str
    host_port: str  # "" (any), "8080" or a dynamic range "8000-8010"


def _split_parts(raw: str) -> tuple[str, str, str]:
    parts = raw.split(":")
    n = len(parts)
    if n == 1:
        return "", "", parts[0]
    if n == 2:
        return "", parts[0], parts[1]
    if n == 3:
        return parts[0], parts[1], parts[2]
    return ":".join(parts[: n - 2]), parts[n - 2], parts[n - 1]


def split_proto_port(raw: str) -> tuple[str, str]:
    parts = raw.split("/")
    if not raw or parts[0] == "":
        return "", ""
    if len(parts) == 1:
        return "tcp", raw
    if parts[1] == "":
        return "tcp", parts[0]
    return parts[1], parts[0]


def _uint16(s: str) -> int:
    if not s.isdigit():
        raise ValueError(s)
    v = int(s)
    if v > 65535:
        raise ValueError(s)
    return v


def parse_range(ports: str) -> tuple[int, int]:
    if not ports:
        raise ValueError("Empty string specified for ports.")
    if "-" not in ports:
        v = _uint16(ports)
        return v, v
    parts = ports.split("-")
    start, end = _uint16(parts[0]), _uint16(parts[1])
    if end < start:
        raise ValueError(f"Invalid range specified for the Port: {ports}")
    return start, end


def parse_spec(raw: str) -> list[Mapping]:
    """One ``-p`` value -> its mappings (docker's errors on bad input)."""
    raw_ip, host_port, ctr = _split_parts(raw)
    proto, ctr = split_proto_port(ctr)
    ip = raw_ip
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    elif ip.startswith("[") or "]" in ip:
        raise InvalidInput(f"Invalid ip address {raw_ip}: address {raw_ip}:: missing port in address")
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidInput(f"Invalid ip address: {ip}") from None
    if ctr == "":
        raise InvalidInput(f"No port specified: {raw}<empty>")
    try:
        start, end = parse_range(ctr)
    except ValueError:
        raise InvalidInput(f"Invalid containerPort: {ctr}") from None
    hstart = hend = 0
    if host_port:
        try:
            hstart, hend = parse_range(host_port)
        except ValueError:
            raise InvalidInput(f"Invalid hostPort: {host_port}") from None
    if host_port and (end - start) != (hend - hstart) and end != start:
        raise InvalidInput(f"Invalid ranges specified for container and host Ports: {ctr} and {host_port}")
    if proto.lower() not in PROTOS:
        raise InvalidInput(f"Invalid proto: {proto}")
    out = []
    for i in range(end - start + 1):
        hp = str(hstart + i) if host_port else ""
        if start == end and hstart != hend:
            hp = f"{hstart}-{hend}"
        out.append(Mapping(f"{start + i}/{proto.lower()}", ip, hp))
    return out


def port_bindings(specs: list[str]) -> dict[str, list[dict[str, str]]]:
    """hostconfig.json PortBindings for the -p values (in docker's order of appearance)."""
    out: dict[str, list[dict[str, str]]] = {}
    for s in specs:
        for m in parse_spec(s):
            out.setdefault(m.port, []).append({"HostIp": m.host_ip, "HostPort": m.host_port})
    return out


def exposed_ports(specs: list[str], image_exposed: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Config.ExposedPorts: the image's EXPOSE plus every published port (as docker merges them)."""
    out: dict[str, dict[str, Any]] = dict((image_exposed or {}).items())
    for s in specs:
        for m in parse_spec(s):
            out.setdefault(m.port, {})
    return out


def port_key(p: str) -> tuple[int, str]:
    num, _, proto = p.partition("/")
    return (int(num) if num.isdigit() else 0, proto or "tcp")


def format_port(port: str, binding: dict[str, str]) -> str:
    """One ``docker port`` line: ``80/tcp -> 0.0.0.0:8080``."""
    ip = binding.get("HostIp") or "0.0.0.0"
    hp = binding.get("HostPort") or ""
    return f"{port} -> {ip}:{hp}"  # the 20.10 CLI joins with a bare ':' (so ':::8080' for IPv6)


def port_lines(ports: dict[str, Any], only: str | None = None) -> list[str]:
    """``docker port CONTAINER [PORT[/PROTO]]`` from NetworkSettings.Ports (sorted as docker sorts them)."""
    want = None
    if only:
        proto, num = split_proto_port(only)
        want = f"{num}/{proto or 'tcp'}"
    lines = []
    for p in sorted(ports or {}, key=port_key):
        if want and p != want:
            continue
        for b in ports[p] or []:
            lines.append(format_port(p, b) if want is None else format_port(p, b).split(" -> ", 1)[1])
    return lines
