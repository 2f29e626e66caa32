"""Platforms (``os/arch[/variant]``), the host's, and matching them as Docker does."""

from __future__ import annotations

import os
import platform as _platform
from dataclasses import dataclass
from typing import Any

from dockyard.errors import DockyardError

_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return s + ("/" + self.variant if self.variant else "")

    def normalized(self) -> Platform:
        arch, variant = self.architecture.lower(), self.variant.lower()
        if arch in ("aarch64",):
            arch = "arm64"
        if arch in ("x86_64", "x86-64"):
            arch = "amd64"
        if arch == "arm64" and variant in ("v8", "8"):
            variant = ""
        if arch == "arm" and variant == "":
            variant = "v7"
        if arch == "amd64" and variant == "v1":
            variant = ""
        return Platform(self.os.lower(), arch, variant)

    def matches(self, other: Platform) -> bool:
        a, b = self.normalized(), other.normalized()
        return a.os == b.os and a.architecture == b.architecture and (a.variant == b.variant)


def host_platform() -> Platform:
    env = os.environ.get("DOCKYARD_PLATFORM")
    if env:
        return parse_platform(env)
    machine = _platform.machine().lower()
    arch = _ARCH.get(machine, machine)
    variant = ""
    if machine.startswith("armv7"):
        variant = "v7"
    elif machine.startswith("armv6"):
        variant = "v6"
    return Platform("linux", arch, variant)


def parse_platform(s: str) -> Platform:
    parts = s.strip().split("/")
    if len(parts) == 1 and parts[0]:
        return Platform("linux", _ARCH.get(parts[0].lower(), parts[0].lower()))
    if len(parts) in (2, 3) and all(parts):
        return Platform(
            parts[0].lower(),
            _ARCH.get(parts[1].lower(), parts[1].lower()),
            parts[2].lower() if len(parts) == 3 else "",
        )
    raise DockyardError(f"invalid platform {s!r}: expected os/arch[/variant], e.g. linux/arm64")


def from_descriptor(p: Any) -> Platform | None:
    if not isinstance(p, dict):
        return None
    return Platform(str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "") or ""))
