"""Capabilities as Docker 20.10.14+ sets them (``oci/caps``, ``oci.SetCapabilities``).

The default set goes into the bounding, effective and permitted sets; inheritable and ambient stay
empty (the fix for CVE-2022-24769: a non-root ``USER`` must not gain a file's inheritable
capabilities). ``--privileged`` gets every capability Docker 20.10 knows (up to
``CAP_AUDIT_READ``: newer ones are left out on purpose, as in ``oci/caps/utils.go``).
``--cap-add``/``--cap-drop`` follow ``TweakCapabilities``: names are upper-cased and given a
``CAP_`` prefix, ``ALL`` on either side has Docker's meaning.
"""

from __future__ import annotations

from typing import Any

from dockyard.errors import InvalidInput

DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# capability numbers 0..37 (linux/capability.h), in number order as gocapability lists them
ALL_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
)


def _kernel_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return len(ALL_CAPS) - 1


def all_caps() -> list[str]:
    """``caps.GetAllCapabilities``: what the kernel has, capped at CAP_AUDIT_READ."""
    last = min(_kernel_last_cap(), len(ALL_CAPS) - 1)
    return list(ALL_CAPS[: last + 1])


def normalize(caps: list[str] | None) -> list[str]:
    """``NormalizeLegacyCapabilities``: upper case, ``CAP_`` prefix, ``ALL`` kept, unknown refused."""
    out = []
    valid = set(ALL_CAPS)
    for c in caps or []:
        c = str(c).upper()
        if c == "ALL":
            out.append(c)
            continue
        if not c.startswith("CAP_"):
            c = "CAP_" + c
        if c not in valid:
            raise InvalidInput(f'unknown capability: "{c}"')
        out.append(c)
    return out


def tweak(adds: list[str] | None, drops: list[str] | None, privileged: bool) -> list[str]:
    """``caps.TweakCapabilities`` with Docker's default set as the base."""
    if privileged:
        return all_caps()
    if not adds and not drops:
        return list(DEFAULT_CAPS)
    cap_drop = normalize(drops)
    cap_add = normalize(adds)
    if "ALL" in cap_add:
        return [c for c in all_caps() if c not in cap_drop]
    if "ALL" in cap_drop:
        return cap_add
    return [c for c in DEFAULT_CAPS if c not in cap_drop] + cap_add


def spec_capabilities(caps: list[str], uid: int) -> dict[str, Any]:
    """``oci.SetCapabilities``: for root bounding, effective and permitted; for another user only
    bounding (as execve would leave them). Inheritable and ambient are always empty; an empty list
    is left out, as Go's ``omitempty`` does."""
    if not caps:
        return {}
    if uid == 0:
        return {"bounding": list(caps), "effective": list(caps), "permitted": list(caps)}
    return {"bounding": list(caps)}
