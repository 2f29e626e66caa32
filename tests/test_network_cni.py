"""dockyard.network.cni against the real CNI reference plugins (bridge, host-local, portmap, loopback).

Each test makes its own bridge (``dyn<random>``) and /24 subnet and its own IPAM dir, so it never touches
docker0; the leak checks look only at the objects named after the test's container ids and bridge.
Traffic goes only to 127.0.0.1 and to the namespace on the test's bridge.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import time
import urllib.request

import pytest

import peers
from dockyard.errors import DockyardError
from dockyard.network import cni

pytestmark = [pytest.mark.peers, pytest.mark.timeout(300)]


@pytest.fixture
def net(tmp_path, monkeypatch):
    peers.need_root()
    for p in ("bridge", "host-local", "portmap", "loopback"):
        if not os.access(os.path.join(cni.CNI_PATH, p), os.X_OK):
            peers.need(os.path.join(cni.CNI_PATH, p))
    peers.need("nsenter")
    peers.need("iptables-save")
    monkeypatch.setattr(cni, "IPAM_DIR", str(tmp_path / "ipam"))
    octet = random.randint(1, 250)
    bridge = "dyn" + secrets.token_hex(4)
    n = cni.BridgeNetwork("t" + bridge, bridge, f"10.231.{octet}.0/24", f"10.231.{octet}.1")
    exec_root = str(tmp_path / "exec")
    yield n, exec_root
    for d in cni.leftovers(exec_root, set()):
        try:
            cni.detach(exec_root, d)
        except DockyardError:
            pass
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def _in_ns(ns: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={ns}", *cmd], capture_output=True, text=True, **kw)


def _leaks(n: cni.BridgeNetwork, exec_root: str, cid: str, att: cni.Attachment) -> list[str]:
    out = []
    if os.path.exists(cni.netns_path(exec_root, cid)) or os.path.exists(cni.record_path(exec_root, cid)):
        out.append("netns file or record")
    if subprocess.run(["ip", "link", "show", att.host_veth], capture_output=True).returncode == 0:
        out.append("veth " + att.host_veth)
    ipt = [ln for ln in peers.iptables_lines() if cid in ln or (att.ip + "/") in ln or f"{att.ip}:" in ln]
    out += ipt
    ipam = os.path.join(cni.IPAM_DIR, f"dockyard-{n.name}")
    for f in os.listdir(ipam) if os.path.isdir(ipam) else []:
        with open(os.path.join(ipam, f), errors="replace") as fh:
            if cid in fh.read():
                out.append("ipam " + f)
    return out


def test_attach_address_route_and_detach(net) -> None:
    n, exec_root = net
    cid = secrets.token_hex(32)
    att = cni.attach(exec_root, cid, n)
    ns = cni.netns_path(exec_root, cid)
    assert att.ip.startswith(n.subnet.rsplit(".", 1)[0] + ".") and att.prefix_len == 24 and att.gateway == n.gateway
    addr = _in_ns(ns, "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert f"{att.ip}/24" in addr, addr
    assert "inet 127.0.0.1/8" in _in_ns(ns, "ip", "-4", "-o", "addr", "show", "lo").stdout
    route = _in_ns(ns, "ip", "route", "show", "default").stdout
    assert f"default via {n.gateway}" in route, route
    assert att.mac and f"link/ether {att.mac} " in _in_ns(ns, "ip", "-o", "link", "show", "eth0").stdout
    # a server on the host, reached from the namespace through the gateway
    import socket
    srv = socket.socket()
    srv.bind((n.gateway, 0))
    srv.listen(1)
    gport = srv.getsockname()[1]
    code = "import socket; s=socket.create_connection((%r, %d), 10); print(s.recv(64).decode())" % (n.gateway, gport)
    cl = subprocess.Popen(["nsenter", f"--net={ns}", sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    srv.settimeout(30)
    conn, peer = srv.accept()
    conn.sendall(b"hello-from-host")
    conn.close()
    srv.close()
    assert cl.communicate(timeout=30)[0].strip() == "hello-from-host" and peer[0] == att.ip
    # masquerade for outbound traffic: the bridge plugin's per-container chain names the container
    assert any(cid in ln for ln in peers.iptables_lines()), "no masquerade rule for the container"
    assert cni.detach(exec_root, cid)
    assert _leaks(n, exec_root, cid, att) == []
    assert not cni.detach(exec_root, cid)  # idempotent


def test_published_port_answers_on_127_0_0_1(net) -> None:
    n, exec_root = net
    cid = secrets.token_hex(32)
    port = peers.free_port()
    att = cni.attach(exec_root, cid, n, [{"hostPort": port, "containerPort": 8000, "protocol": "tcp",
                                          "hostIP": "127.0.0.1"}])
    ns = cni.netns_path(exec_root, cid)
    d = os.path.dirname(exec_root)
    with open(os.path.join(d, "index.html"), "w") as f:
        f.write("served-from-netns\n")
    srv = subprocess.Popen(["nsenter", f"--net={ns}", sys.executable, "-m", "http.server", "8000", "--bind",
                            "0.0.0.0", "--directory", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert body == "served-from-netns\n", "no answer on 127.0.0.1:%d" % port
    finally:
        peers.stop_pid(srv.pid, srv)
    cni.detach(exec_root, cid)
    assert _leaks(n, exec_root, cid, att) == []
    assert not [ln for ln in peers.iptables_lines() if f"--dport {port} " in ln or f"dport {port}" in ln]


def test_conflicting_ip_leaves_nothing(net) -> None:
    n, exec_root = net
    a, b = secrets.token_hex(32), secrets.token_hex(32)
    want = n.subnet.rsplit(".", 1)[0] + ".77"
    att = cni.attach(exec_root, a, n, ip=want)
    assert att.ip == want
    with pytest.raises(DockyardError):
        cni.attach(exec_root, b, n, ip=want)
    assert not os.path.exists(cni.netns_path(exec_root, b)) and not os.path.exists(cni.record_path(exec_root, b))
    assert not [ln for ln in peers.iptables_lines() if b in ln]
    cni.detach(exec_root, a)
    assert _leaks(n, exec_root, a, att) == []


def test_leftovers_found_after_a_crash(net) -> None:
    """A record + namespace whose owner died (kill -9) is listed by leftovers and fully released by detach."""
    n, exec_root = net
    cid = secrets.token_hex(32)
    code = ("import sys, os, signal; sys.path.insert(0, %r); from dockyard.network import cni; "
            "cni.IPAM_DIR = %r; cni.attach(%r, %r, cni.BridgeNetwork(%r, %r, %r, %r)); "
            "os.kill(os.getpid(), signal.SIGKILL)") % (
        os.path.dirname(cni.__file__).rsplit("/dockyard", 1)[0], cni.IPAM_DIR, exec_root, cid, n.name, n.bridge,
        n.subnet, n.gateway)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert p.returncode == -9, p.stderr
    assert cni.leftovers(exec_root, set()) == [cid[:12]]
    with open(cni.record_path(exec_root, cid)) as f:
        rec = json.load(f)
    att = cni._attachment(rec["result"], rec["netns"])
    cni.detach(exec_root, cid)
    assert cni.leftovers(exec_root, set()) == []
    assert _leaks(n, exec_root, cid, att) == []
