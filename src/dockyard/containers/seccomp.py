"""Docker's seccomp profile, converted to the OCI ``linux.seccomp`` form as dockerd 20.10 does.

The profile is Docker's own (``profiles/seccomp/default.json`` of moby 20.10, shipped by Debian's
``golang-github-docker-docker-dev``) or a file the user names with
``--security-opt seccomp=PROFILE.json``; dockyard has no list of its own. The conversion follows
``profiles/seccomp/seccomp_linux.go`` (``setupSeccomp``):

- ``architectures`` and ``archMap`` are exclusive; from ``archMap`` only the entry of the host's
  architecture is kept, with its sub-architectures;
- a rule is dropped when its ``excludes`` match (the host's arch, a capability in the bounding
  set, a kernel at least ``minKernel``) or its ``includes`` do not;
- ``name`` and ``names`` are exclusive; ``errnoRet`` and ``args`` are kept as given
  (``valueTwo: 0`` is left out, as Go's ``omitempty`` does).

As in Docker, the profile's text is what ``SecurityOpt`` (``seccomp=<json>``) and config.v2.json's
``SeccompProfile`` record, so a container keeps the profile it was created with.
"""

from __future__ import annotations

import json
import os
import platform
import re
from typing import Any

from dockyard.errors import InvalidInput

DEFAULT_PROFILE = "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json"
PROFILE_ENV = "DOCKYARD_SECCOMP_PROFILE"  # where Docker's profile is, when not at DEFAULT_PROFILE
MAX_PROFILE = 4 << 20

# uname -m -> libseccomp's name (goToNative) -> the OCI arch (nativeToSeccomp)
_MACHINE_NATIVE = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "x86",
    "i686": "x86",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "s390": "s390",
    "mips64": "mips64",
}
_NATIVE_SECCOMP = {
    "x86": "SCMP_ARCH_X86",
    "amd64": "SCMP_ARCH_X86_64",
    "arm": "SCMP_ARCH_ARM",
    "arm64": "SCMP_ARCH_AARCH64",
    "mips64": "SCMP_ARCH_MIPS64",
    "mips64n32": "SCMP_ARCH_MIPS64N32",
    "mipsel64": "SCMP_ARCH_MIPSEL64",
    "mips3l64n32": "SCMP_ARCH_MIPSEL64N32",
    "mipsle": "SCMP_ARCH_MIPSEL",
    "ppc": "SCMP_ARCH_PPC",
    "ppc64": "SCMP_ARCH_PPC64",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "s390": "SCMP_ARCH_S390",
    "s390x": "SCMP_ARCH_S390X",
}


class SeccompError(InvalidInput):
    pass


def default_profile_path() -> str:
    return os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE


def read_profile(path: str) -> str:
    """A profile file's text, compacted as the docker CLI does before it sends it (one line)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise SeccompError(f"opening seccomp profile ({path}) failed: {e.strerror}") from None
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SeccompError(f"opening seccomp profile ({path}) failed: not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_PROFILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_PROFILE:
        raise SeccompError(f"seccomp profile ({path}) is larger than {MAX_PROFILE} bytes")
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise SeccompError(f"compacting json for seccomp profile ({path}) failed: {e}") from None
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def default_profile_text() -> str:
    path = default_profile_path()
    if not os.path.exists(path):
        raise SeccompError(
            f"Docker's default seccomp profile is missing ({path}): install golang-github-docker-docker-dev"
            f" or set {PROFILE_ENV}, or run with --security-opt seccomp=unconfined"
        )
    return read_profile(path)


def _native_arch() -> str:
    m = platform.machine()
    return _MACHINE_NATIVE.get(m, m)


def _kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    if not m:
        raise SeccompError(f"failed to parse kernel version {os.uname().release!r}")
    return int(m.group(1)), int(m.group(2))


def _parse_kernel(v: Any) -> tuple[int, int] | None:
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise SeccompError(f'invalid kernel version: {json.dumps(v)}, expected "<kernel>.<major>"')
    parts = v.split(".", 2)
    if len(parts) != 2 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise SeccompError(f'invalid kernel version: "{v}", expected "<kernel>.<major>"')
    k = (int(parts[0]), int(parts[1]))
    if k == (0, 0):
        raise SeccompError(
            f'invalid kernel version: "{v}", expected "<kernel>.<major>": version cannot be 0.0'
        )
    return k


def _strs(v: Any, what: str) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise SeccompError(f"Decoding seccomp profile failed: {what} must be a list of strings")
    return list(v)


_ARG_KEYS = ("index", "value", "valueTwo", "op")


def _arg(a: Any) -> dict[str, Any]:
    if not isinstance(a, dict):
        raise SeccompError("Decoding seccomp profile failed: args must be objects")
    out: dict[str, Any] = {}
    for k in _ARG_KEYS:
        v = a.get(k)
        if k == "op":
            if not isinstance(v, str):
                raise SeccompError("Decoding seccomp profile failed: an arg has no op")
            out[k] = v
            continue
        if v is None:
            v = 0
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v >= 1 << 64:
            raise SeccompError(f"Decoding seccomp profile failed: arg {k} must be an unsigned integer")
        if k == "index" and v > 5:
            raise SeccompError("Decoding seccomp profile failed: arg index must be 0-5")
        if v or k in ("index", "value"):
            out[k] = v
    return out


def convert(text: str, bounding: list[str]) -> dict[str, Any] | None:
    """``setupSeccomp``: the profile's JSON text to ``linux.seccomp`` for a container whose
    bounding set is ``bounding``; None when the profile disables seccomp."""
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise SeccompError(f"Decoding seccomp profile failed: {e}") from None
    if not isinstance(cfg, dict):
        raise SeccompError("Decoding seccomp profile failed: not a JSON object")
    default_action = cfg.get("defaultAction") or ""
    syscalls = cfg.get("syscalls") or []
    if not isinstance(default_action, str) or not isinstance(syscalls, list):
        raise SeccompError("Decoding seccomp profile failed: bad defaultAction or syscalls")
    if not default_action and not syscalls:
        return None
    archs = _strs(cfg.get("architectures"), "architectures")
    arch_map = cfg.get("archMap") or []
    if archs and arch_map:
        raise SeccompError(
            "'architectures' and 'archMap' were specified in the seccomp profile, use either "
            "'architectures' or 'archMap'"
        )
    out: dict[str, Any] = {"defaultAction": default_action}
    errno_ret = cfg.get("defaultErrnoRet")
    if errno_ret is not None:
        if not isinstance(errno_ret, int) or errno_ret < 0:
            raise SeccompError("Decoding seccomp profile failed: defaultErrnoRet must be an unsigned integer")
        out["defaultErrnoRet"] = errno_ret
    native = _native_arch()
    scmp_arch = _NATIVE_SECCOMP.get(native)
    new_archs = list(archs)
    if arch_map and scmp_arch:
        if not isinstance(arch_map, list):
            raise SeccompError("Decoding seccomp profile failed: archMap must be a list")
        for a in arch_map:
            if isinstance(a, dict) and a.get("architecture") == scmp_arch:
                new_archs.append(scmp_arch)
                new_archs += _strs(a.get("subArchitectures"), "subArchitectures")
                break
    if new_archs:
        out["architectures"] = new_archs
    kernel = _kernel_version()
    caps = set(bounding)
    rules = []
    for call in syscalls:
        if not isinstance(call, dict):
            raise SeccompError("Decoding seccomp profile failed: syscalls must be objects")
        exc = call.get("excludes") or {}
        inc = call.get("includes") or {}
        if not isinstance(exc, dict) or not isinstance(inc, dict):
            raise SeccompError("Decoding seccomp profile failed: includes/excludes must be objects")
        if native in _strs(exc.get("arches"), "arches"):
            continue
        if any(c in caps for c in _strs(exc.get("caps"), "caps")):
            continue
        k = _parse_kernel(exc.get("minKernel"))
        if k is not None and kernel >= k:
            continue
        inc_arches = _strs(inc.get("arches"), "arches")
        if inc_arches and native not in inc_arches:
            continue
        if any(c not in caps for c in _strs(inc.get("caps"), "caps")):
            continue
        k = _parse_kernel(inc.get("minKernel"))
        if k is not None and kernel < k:
            continue
        name = call.get("name") or ""
        names = _strs(call.get("names"), "names")
        if name and names:
            raise SeccompError(
                "'name' and 'names' were specified in the seccomp profile, use either 'name' or 'names'"
            )
        action = call.get("action")
        if not isinstance(action, str) or not action:
            raise SeccompError("Decoding seccomp profile failed: a syscall rule has no action")
        rule: dict[str, Any] = {"names": [name] if name else names, "action": action}
        if call.get("errnoRet") is not None:
            er = call["errnoRet"]
            if not isinstance(er, int) or er < 0:
                raise SeccompError("Decoding seccomp profile failed: errnoRet must be an unsigned integer")
            rule["errnoRet"] = er
        args = call.get("args") or []
        if not isinstance(args, list):
            raise SeccompError("Decoding seccomp profile failed: args must be a list")
        if args:
            rule["args"] = [_arg(a) for a in args]
        rules.append(rule)
    out["syscalls"] = rules
    return out
