"""``dockyard demo``: the walkthrough on real data, checked against the store and the kernel."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import _env, chain_ids, img_root, read_text, require_peer, require_root, run_dy


def _demo_image(root: Path, tag: str) -> dict:
    repos = json.loads((img_root(root) / "repositories.json").read_text())["Repositories"]
    image_id = repos["dockyard-demo"][f"dockyard-demo:{tag}"]
    return json.loads((img_root(root) / "imagedb/content/sha256" / image_id.split(":")[1]).read_bytes())


def _mount_options(target: str) -> str:
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[1] == target and parts[2] == "overlay":
                return parts[3]
    raise AssertionError(f"{target} is not an overlay mount in /proc/mounts")


def test_demo_as_root_shows_every_step(data_root: Path) -> None:
    require_root("demo's container part")
    require_peer("runc")
    p = run_dy("demo", "--keep", root=data_root, timeout=300)
    out = p.stdout
    try:
        # the image part: chain IDs recomputed here, every layer stored, each ID printed
        cfg = _demo_image(data_root, "latest")
        diff_ids = cfg["rootfs"]["diff_ids"]
        assert len(diff_ids) == 3
        chains = chain_ids(diff_ids)
        for d, c in zip(diff_ids, chains, strict=True):
            layer = img_root(data_root) / "layerdb/sha256" / c.split(":")[1]
            assert read_text(layer / "diff") == d
            cache = read_text(layer / "cache-id")
            assert cache and cache[:12] in out
            link = read_text(data_root / "overlay2" / cache / "link")
            assert link and link in out
            assert os.readlink(data_root / "overlay2/l" / link) == f"../{cache}/diff"
            assert d.split(":")[1][:12] in out and c.split(":")[1][:12] in out
        # the blob digests: the demo's layout is reproducible; each blob's digest is printed and
        # its decompressed sha256 is the diffID
        from dockyard.engine.demo import build_layout

        with tempfile.TemporaryDirectory() as t:
            _, digests = build_layout(t)
            for dg, d in zip(digests, diff_ids, strict=True):
                blob = Path(t, "blobs/sha256", dg.split(":")[1]).read_bytes()
                assert "sha256:" + hashlib.sha256(blob).hexdigest() == dg
                assert "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == d
                assert dg.split(":")[1][:12] in out
        # the container: its mounts entry, init and rw layers, the live lowerdir string
        mounts = list((img_root(data_root) / "layerdb/mounts").iterdir())
        assert len(mounts) == 1
        cid = mounts[0].name
        mid = read_text(mounts[0] / "mount-id")
        assert mid and read_text(mounts[0] / "init-id") == mid + "-init"
        assert read_text(mounts[0] / "parent") == chains[-1]
        assert f"overlay2/{mid}-init" in out and f"overlay2/{mid}" in out
        opts = _mount_options(str(data_root / "overlay2" / mid / "merged"))
        lower = re.search(r"lowerdir=([^,]+)", opts)
        assert lower is not None
        assert f"lowerdir={lower.group(1)}" in out
        init_link = read_text(data_root / "overlay2" / (mid + "-init") / "link")
        assert lower.group(1).split(":")[0] == str(data_root / "overlay2/l" / str(init_link))
        assert len(lower.group(1).split(":")) == 4  # init + three image layers
        cdir = data_root / "containers" / cid
        assert cid in out
        hostname = read_text(cdir / "hostname")
        assert hostname and hostname.strip() in out
        for line in (read_text(cdir / "resolv.conf") or "").splitlines() + (
            read_text(cdir / "hosts") or ""
        ).splitlines():
            if line.strip():  # rich expands tabs: compare with whitespace collapsed
                assert " ".join(line.split()) in " ".join(out.split())
        # the bind mount was seen, the change is in diff
        assert "C    │ /etc/motd" in out or re.search(r"C\s+│\s+/etc/motd", out)
        assert re.search(r"A\s+│\s+/root/seen\.txt", out)
        upper = data_root / "overlay2" / mid / "diff"
        assert (upper / "root/seen.txt").read_text().startswith("written on the host")
        # commit: exactly one more layer, on top of the same chain
        new = _demo_image(data_root, "committed")
        assert new["rootfs"]["diff_ids"][:3] == diff_ids
        assert len(new["rootfs"]["diff_ids"]) == 4
        assert "layers: 3 -> 4" in out
        assert "skipped" not in out
    finally:
        run_dy("rm", "-f", "dockyard-demo", root=data_root, check=False)
    assert not (img_root(data_root) / "layerdb/mounts" / cid).exists()


def test_demo_without_keep_removes_its_container(data_root: Path) -> None:
    require_root("demo's container part")
    require_peer("runc")
    out = run_dy("demo", root=data_root, timeout=300).stdout
    assert "Cleaned up" in out
    assert list((img_root(data_root) / "layerdb/mounts").iterdir()) == []
    assert list((data_root / "containers").iterdir()) == []
    with open("/proc/self/mounts") as f:
        assert not [ln for ln in f if str(data_root) in ln]


def _hidden_ancestor(path: Path) -> Path | None:
    for a in reversed(path.parents):
        if a != Path("/") and not os.stat(a).st_mode & 0o001:
            return a
    return None


def test_demo_unprivileged_shows_the_image_and_says_why() -> None:
    """As the user nobody (no capabilities): the image part, then what was skipped and why. When the
    interpreter lives below a directory others cannot enter (pyenv in /root), a private mount namespace
    shows that one tree to nobody."""
    require_root("switching to the user nobody")
    for tool in ("runuser", "unshare", "mount"):
        assert shutil.which(tool), f"{tool} is needed (util-linux)"
    work = Path(tempfile.mkdtemp(prefix="docs-demo-nobody-"))
    repo = Path(__file__).resolve().parent.parent
    try:
        os.chmod(work, 0o777)
        script = ["set -e"]
        for n, keep in enumerate({Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent, repo}):
            hidden = _hidden_ancestor(keep)
            if hidden is None:
                continue
            top = hidden / keep.relative_to(hidden).parts[0]
            hold = work / f"hold{n}"
            script += [
                f"mkdir -p {hold}",
                f"mount --bind {top} {hold}",
                f"mountpoint -q {hidden} || mount -t tmpfs -o mode=755 dy-demo {hidden}",
                f"mkdir -p {top}",
                f"mount --bind {hold} {top}",
            ]
        script.append('exec runuser -u nobody -- "$@"')
        env = _env()
        cmd = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "\n".join(script),
            "sh",
            "env",
            *[f"{k}={v}" for k, v in env.items() if k in ("PYTHONPATH", "PATH", "LC_ALL", "COLUMNS")],
            f"HOME={work}",
            sys.executable,
            "-m",
            "dockyard",
            "--data-root",
            str(work / "dr"),
            "demo",
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd="/", timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        cfg = _demo_image(work / "dr", "latest")
        assert len(cfg["rootfs"]["diff_ids"]) == 3
        for c in chain_ids(cfg["rootfs"]["diff_ids"]):
            assert c.split(":")[1][:12] in p.stdout
        assert "skipped: not running as root" in p.stdout
        assert not (work / "dr/containers").exists() or not list((work / "dr/containers").iterdir())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_demo_with_a_missing_runtime_says_so_and_leaves_no_container(data_root: Path) -> None:
    require_root("demo's container part")
    p = run_dy("--runtime", "dockyard-no-such-runtime", "demo", root=data_root, timeout=300)
    assert "skipped: the OCI runtime 'dockyard-no-such-runtime' is not installed" in p.stdout
    assert len(_demo_image(data_root, "latest")["rootfs"]["diff_ids"]) == 3
    assert not (data_root / "containers").exists() or list((data_root / "containers").iterdir()) == []
