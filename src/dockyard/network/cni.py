"""Network namespaces that outlive the CLI, and the CNI reference plugins.

A namespace is an nsfs bind mount on ``<exec-root>/netns/<id12>`` (made by ``unshare --net=FILE``, so
no process has to hold it); it is released by a lazy unmount and unlink.  ``attach`` runs the network's
plugin list (``bridge`` with ``host-local`` IPAM, then ``portmap``) with CNI_COMMAND=ADD, each plugin
getting the previous result as ``prevResult`` (CNI spec 0.4.0), and ``loopback`` for ``lo``; the
result is recorded in ``<exec-root>/netns/<id12>.json`` *before* the ADD runs, so a crash at any
point leaves a record that ``detach`` (run by the monitor at exit, by reap, or by fsck) uses to DEL
each plugin in reverse order, which releases the address, the veth and the port rules.

host-local keeps its allocations in ``IPAM_DIR/<network>/`` (one file per address naming the
container).  That dir is host-wide (``/run/dockyard/cni``), not per data-root, because the bridge and
its subnet are host-wide too: two data-roots on docker0 must never be handed the same address.  It is
on tmpfs on purpose: after a reboot no namespace survives, so no allocation may either.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any

from dockyard.errors import DockyardError

CNI_PATH = os.environ.get("DOCKYARD_CNI_PATH", "/usr/lib/cni")
IPAM_DIR = os.environ.get("DOCKYARD_IPAM_DIR", "/run/dockyard/cni")
CNI_VERSION = "0.4.0"
MNT_DETACH = 2


class NetworkError(DockyardError):
    pass


@dataclass
class BridgeNetwork:
    """A bridge network: docker0/172.17.0.0/16 for ``bridge``, or a user-defined one."""

    name: str
    bridge: str
    subnet: str
    gateway: str
    masquerade: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def plugins(self, port_mappings: list[dict[str, Any]]) -> list[dict[str, Any]]:
        bridge = {
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": True,
            "ipMasq": self.masquerade,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet, "gateway": self.gateway}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": IPAM_DIR,
            },
        }
        out: list[dict[str, Any]] = [bridge]
        if port_mappings:
            out.append(
                {
                    "type": "portmap",
                    "snat": True,
                    "capabilities": {"portMappings": True},
                    "runtimeConfig": {"portMappings": port_mappings},
                }
            )
        return out


DEFAULT_BRIDGE = BridgeNetwork("bridge", "docker0", "172.17.0.0/16", "172.17.0.1")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def netns_dir(exec_root: str) -> str:
    return os.path.join(exec_root, "netns")


def netns_path(exec_root: str, cid: str) -> str:
    return os.path.join(netns_dir(exec_root), cid[:12])


def record_path(exec_root: str, cid: str) -> str:
    return netns_path(exec_root, cid) + ".json"


def create_netns(path: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444)
    os.close(fd)
    p = subprocess.run(["unshare", f"--net={path}", "true"], capture_output=True)
    if p.returncode != 0:
        remove_netns(path)
        raise NetworkError("cannot create network namespace: " + p.stderr.decode(errors="replace").strip())


def remove_netns(path: str) -> None:
    libc = _libc()
    if libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        e = ctypes.get_errno()
        if e not in (22, 2):  # EINVAL: not mounted; ENOENT
            raise NetworkError(f"cannot unmount {path}: {os.strerror(e)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _invoke(plugin: str, command: str, cid: str, netns: str, ifname: str, conf: dict[str, Any]) -> dict[str, Any]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": CNI_PATH,
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    }
    exe = os.path.join(CNI_PATH, plugin)
    if not os.access(exe, os.X_OK):
        raise NetworkError(f"CNI plugin {plugin!r} not found in {CNI_PATH} (install containernetworking-plugins)")
    p = subprocess.run([exe], input=json.dumps(conf).encode(), env=env, capture_output=True)
    out = p.stdout.decode(errors="replace").strip()
    if p.returncode != 0:
        msg = out or p.stderr.decode(errors="replace").strip()
        try:
            err = json.loads(msg)
            msg = str(err.get("msg") or msg) + (f": {err['details']}" if err.get("details") else "")
        except (ValueError, AttributeError):
            pass
        raise NetworkError(f"{plugin} {command.lower()} failed: {msg}")
    if not out:
        return {}
    try:
        res: dict[str, Any] = json.loads(out)
    except ValueError:
        raise NetworkError(f"{plugin}: unreadable result {out[:200]!r}") from None
    return res


def _conf(net: BridgeNetwork, plugin: dict[str, Any], prev: dict[str, Any] | None) -> dict[str, Any]:
    c = {"cniVersion": CNI_VERSION, "name": f"dockyard-{net.name}", **plugin}
    if prev is not None:
        c["prevResult"] = prev
    return c


def _save(path: str, rec: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(rec, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


@dataclass
class Attachment:
    ip: str
    prefix_len: int
    gateway: str
    mac: str
    netns: str
    host_veth: str


def attach(
    exec_root: str, cid: str, net: BridgeNetwork, port_mappings: list[dict[str, Any]] | None = None,
    ip: str = "",
) -> Attachment:
    """Create the namespace and run the plugins; on any failure everything made is undone."""
    ns = netns_path(exec_root, cid)
    rec_path = record_path(exec_root, cid)
    plugins = net.plugins(port_mappings or [])
    if ip:  # --ip: a one-address range, so host-local refuses an address that is taken
        plugins[0]["ipam"]["ranges"] = [
            [{"subnet": net.subnet, "gateway": net.gateway, "rangeStart": ip, "rangeEnd": ip}]
        ]
    rec: dict[str, Any] = {"id": cid, "netns": ns, "network": net.name, "plugins": plugins, "result": None}
    os.makedirs(netns_dir(exec_root), mode=0o711, exist_ok=True)
    _save(rec_path, rec)
    try:
        create_netns(ns)
        _invoke("loopback", "ADD", cid, ns, "lo", {"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"})
        prev: dict[str, Any] | None = None
        for pl in plugins:
            prev = _invoke(pl["type"], "ADD", cid, ns, "eth0", _conf(net, pl, prev)) or prev
        rec["result"] = prev
        _save(rec_path, rec)
    except BaseException:
        detach(exec_root, cid)
        raise
    return _attachment(prev or {}, ns)


def _attachment(res: dict[str, Any], ns: str) -> Attachment:
    ifaces = res.get("interfaces") or []
    ips = res.get("ips") or []
    if not ips:
        raise NetworkError("the bridge plugin returned no address")
    addr, _, plen = str(ips[0]["address"]).partition("/")
    mac = ""
    host = ""
    for i in ifaces:
        if i.get("sandbox"):
            mac = str(i.get("mac") or "")
        elif i.get("name", "").startswith("veth"):
            host = str(i["name"])
    return Attachment(addr, int(plen or 0), str(ips[0].get("gateway") or ""), mac, ns, host)


def load_record(exec_root: str, cid: str) -> dict[str, Any] | None:
    try:
        with open(record_path(exec_root, cid), encoding="utf-8") as f:
            rec: dict[str, Any] = json.load(f)
            return rec
    except (OSError, ValueError):
        return None


def detach(exec_root: str, cid: str) -> bool:
    """Undo ``attach`` from its record (idempotent); True if there was something to release."""
    rec = load_record(exec_root, cid)
    ns = netns_path(exec_root, cid)
    if rec is None and not os.path.exists(ns):
        return False
    errors: list[str] = []
    if rec is not None:
        net = BridgeNetwork(str(rec.get("network") or "bridge"), "", "", "")
        prev = rec.get("result")
        full = str(rec.get("id") or cid)
        for pl in reversed(rec.get("plugins") or []):
            try:
                # DEL must succeed even when the namespace is already gone (CNI spec)
                _invoke(pl["type"], "DEL", full, ns if os.path.exists(ns) else "", "eth0", _conf(net, pl, prev))
            except NetworkError as e:
                errors.append(str(e))
    remove_netns(ns)
    if not errors:
        try:
            os.unlink(record_path(exec_root, cid))
        except FileNotFoundError:
            pass
    else:
        raise NetworkError("; ".join(errors))
    return True


def leftovers(exec_root: str, live: set[str]) -> list[str]:
    """Container ids (12 hex) with a namespace or record here but not in ``live`` (full ids)."""
    d = netns_dir(exec_root)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    short = {c[:12] for c in live}
    out = set()
    for n in names:
        base = n[:-5] if n.endswith(".json") else n
        if len(base) == 12 and base not in short:
            out.add(base)
    return sorted(out)

