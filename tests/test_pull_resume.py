"""Acceptance (resume, 4): a pull killed halfway resumes and downloads only the rest.

A FakeRegistry (tests/registry_servers.py) serves a generated image whose single layer is ~20 MB of random
bytes (gzip does not shrink it). Its GET handler for that blob is ours: it honours `Range: bytes=N-` (206), counts
the bytes it sends per request, and can stall after a given offset.

1. `dockyard pull` runs in the background; the blob stalls at half its size; once the partial file has stopped
   growing the CLI process is SIGKILLed (only it, as a crash would; its forked workers must die with it).
2. After the kill: no process of the pull is left; the store has no new image or tag; `fsck` reports nothing
   that is not repairable; `tmp/dockyard-pull/<hex>.partial` holds a verified prefix of the blob.
3. The next pull (no stall) sends a Range request starting after what is already there, the server sends
   fewer bytes than the blob's size (exactly the rest), and the store ends complete: the image, its layer
   content, `fsck --deep` without any finding, and the same image/ files as an
   uninterrupted pull into another data-root; the partial file is gone.

Also: a registry that ignores Range (answers 200 with the whole blob) on the resume, and a partial file whose
bytes are wrong (not a prefix of the blob), must still end in the right image and never wedge later pulls.
"""
from __future__ import annotations

import json
import re
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

import peers
from faultlib import fmt_findings, fsck_report, snapshot
from listing import compare_listing, list_tree
from pulllib import (
    StoreFacts,
    clean_error,
    dy,
    dy_ok,
    isolated_docker_config,  # noqa: F401  (autouse fixture)
    show,
    sigkill_and_reap,
    start_dy,
)
from registry_servers import FakeRegistry, FakeServer, Request, make_test_image

pytestmark = [pytest.mark.peers, pytest.mark.timeout(300)]

LAYER_RANDOM = 20 << 20
CHUNK = 64 << 10
REPO = "slow/big"


class SlowBlob:
    """GET handler for one blob: Range-aware, counts bytes sent per request, can stall at an offset."""

    def __init__(self, data: bytes, digest: str) -> None:
        self.data = data
        self.digest = digest
        self.requests: list[dict[str, Any]] = []
        self.stall_at: int | None = None
        self.ignore_range = False
        self.release = threading.Event()

    def __call__(self, req: Request) -> None:
        rng = req.headers.get("Range")
        start, status = 0, 200
        if rng and not self.ignore_range:
            m = re.match(r"^bytes=(\d+)-$", rng.strip())
            assert m, rng
            start, status = int(m.group(1)), 206
        rec = {"range": rng, "start": start, "sent": 0, "status": status}
        self.requests.append(rec)
        h = req.handler
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Docker-Content-Digest", self.digest)
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(self.data) - start))
        if status == 206:
            h.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(self.data) - 1, len(self.data)))
        h.end_headers()
        req.answered = True
        pos = start
        try:
            while pos < len(self.data):
                if self.stall_at is not None and pos >= self.stall_at:
                    self.release.wait(120)
                    req.drop()
                    return
                end = min(pos + CHUNK, len(self.data))
                if self.stall_at is not None and pos < self.stall_at:
                    end = min(end, self.stall_at)
                h.wfile.write(self.data[pos:end])
                h.wfile.flush()
                rec["sent"] += end - pos
                pos = end
        except OSError:  # the client went away (killed)
            h.close_connection = True


@pytest.fixture
def slow(tmp_path: Path) -> Any:
    peers.need_root()
    img = make_test_image("resume me\n", size=LAYER_RANDOM)
    app = FakeRegistry()
    app.put_blob(REPO, img.layer)
    app.put_blob(REPO, img.config)
    app.put_manifest(REPO, "1", img.manifest, img.media_type)
    blob = SlowBlob(img.layer, img.layer_digest)
    app.add_fault("GET", r"/blobs/%s$" % re.escape(img.layer_digest), blob, times=-1)
    srv = FakeServer(app).start()
    app.server = srv
    try:
        yield types.SimpleNamespace(img=img, app=app, srv=srv, blob=blob, ref="%s/%s:1" % (srv.addr, REPO))
    finally:
        blob.release.set()
        srv.stop()
        assert not srv.app_errors, srv.app_errors


def _partials(root: Path) -> list[Path]:
    d = root / "tmp" / "dockyard-pull"
    return sorted(d.glob("*.partial")) if d.is_dir() else []


def _kill_halfway(slow: Any, root: Path, tmp_path: Path) -> int:
    """Start a pull, let it stall at half the blob, SIGKILL it; return the size of the partial file."""
    blob = slow.blob
    blob.stall_at = len(blob.data) // 2
    p = start_dy(root, "pull", slow.ref, out_dir=tmp_path)
    try:
        deadline = time.monotonic() + 60
        last, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            assert p.poll() is None, "the pull ended before it was killed (rc %s):\n%s" % (
                p.returncode, (tmp_path / "bg.stderr").read_text())
            sent = blob.requests[-1]["sent"] if blob.requests else 0
            parts = _partials(root)
            size = parts[0].stat().st_size if parts else 0
            if size != last:
                last, stable_since = size, time.monotonic()
            if sent >= blob.stall_at and size > 0 and time.monotonic() - stable_since > 0.7:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the download never reached the stall point: sent %s, partial %s" % (
                blob.requests[-1]["sent"] if blob.requests else None, last))
    finally:
        stragglers = sigkill_and_reap(p)
        blob.stall_at = None
        blob.release.set()
    assert p.returncode == -9
    assert not stragglers, "processes of the killed pull outlived it: %s" % stragglers
    return last


def _assert_complete(root: Path, slow: Any) -> StoreFacts:
    img = slow.img
    facts = StoreFacts.read(root)
    assert facts.image_ids == [img.config_digest]
    assert facts.refs() == {slow.ref: img.config_digest,
                            slow.ref.rsplit(":", 1)[0] + "@" + img.manifest_digest: img.config_digest}
    chain = img.diff_id
    diff = facts.diff_dir(chain)
    assert (diff / "hello.txt").read_bytes() == b"resume me\n"
    assert (diff / "blob.bin").stat().st_size == LAYER_RANDOM
    _rc, rep = fsck_report(root, "--deep")
    # the pull cleaned up after the killed one: nothing at all to report
    assert not rep["findings"] and not rep.get("damaged_images"), \
        "fsck --deep after the resumed pull:\n" + fmt_findings(rep)
    print("fsck --deep after the resumed pull:\n" + fmt_findings(rep))
    assert not _partials(root), "partial files left after a successful pull: %s" % _partials(root)
    return facts


def test_killed_pull_resumes_with_range(slow: Any, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    size_blob = len(slow.blob.data)
    have = _kill_halfway(slow, root, tmp_path)

    # after the kill
    facts = StoreFacts.read(root)
    assert facts.image_ids == [] and facts.refs() == {}, "a killed pull left an image or a tag"
    _rc, rep = fsck_report(root)
    bad = [f for f in rep["findings"] if not f["repairable"]]
    assert not bad, "fsck after the kill has findings that are not repairable:\n" + fmt_findings(rep)
    print("fsck after the kill:\n" + fmt_findings(rep))
    parts = _partials(root)
    assert [p.name for p in parts] == [slow.img.layer_digest[7:] + ".partial"], parts
    part = parts[0].read_bytes()
    assert 0 < len(part) <= size_blob // 2
    assert part == slow.blob.data[:len(part)], "the partial file is not a prefix of the blob"

    # the resumed pull
    n0 = len(slow.blob.requests)
    p = dy(root, "pull", slow.ref)
    assert p.returncode == 0, show(p)
    reqs = slow.blob.requests[n0:]
    assert reqs, "the resumed pull did not fetch the blob at all"
    ranged = [r for r in reqs if r["range"]]
    assert ranged, "no Range request on resume: %s" % reqs
    assert ranged[0]["start"] == have, "resumed from byte %d, the partial file held %d" % (ranged[0]["start"], have)
    served = sum(r["sent"] for r in reqs)
    assert served < size_blob, "the resumed pull downloaded %d bytes of a %d-byte blob" % (served, size_blob)
    assert served == size_blob - have, "served %d bytes, the rest was %d" % (served, size_blob - have)
    resumed = _assert_complete(root, slow)

    # the same image/ files as a pull that was never interrupted
    ref_root = tmp_path / "uninterrupted"
    ref_root.mkdir()
    dy_ok(ref_root, "pull", slow.ref)
    fresh = StoreFacts.read(ref_root)
    diffs = [k for k in set(resumed.image_files) | set(fresh.image_files)
             if resumed.image_files.get(k) != fresh.image_files.get(k)]
    assert not diffs, "resumed vs uninterrupted pull: %s" % sorted(diffs)
    chain = slow.img.diff_id
    assert not compare_listing(list_tree(resumed.diff_dir(chain)), list_tree(fresh.diff_dir(chain)))


def test_resume_when_registry_ignores_range(slow: Any, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _kill_halfway(slow, root, tmp_path)
    slow.blob.ignore_range = True
    p = dy(root, "pull", slow.ref)
    assert p.returncode == 0, show(p)
    _assert_complete(root, slow)


def test_partial_file_with_wrong_bytes_does_not_wedge_pulls(slow: Any, tmp_path: Path) -> None:
    """A partial file that is not a prefix of the blob (disk damage, or a registry that served other bytes
    earlier): a pull may fail once with a clear error, but must not register a wrong image, and the pull after
    it must succeed."""
    root = tmp_path / "root"
    root.mkdir()
    have = _kill_halfway(slow, root, tmp_path)
    part = _partials(root)[0]
    with open(part, "r+b") as f:
        f.seek(have // 2)
        f.write(b"\xff" * 4096)
    before = snapshot(root)
    p = dy(root, "pull", slow.ref)
    if p.returncode != 0:
        clean_error(p, "pull over a damaged partial file")
        assert StoreFacts.read(root).image_ids == [], "a failed pull registered an image"
        added = sorted(k for k in set(snapshot(root)) - set(before) if not k.startswith("tmp"))
        assert not added, "a failed pull added to the store: %s" % added
        print("first pull over the damaged partial file failed: %s" % p.stderr.strip())
        p = dy(root, "pull", slow.ref)
        assert p.returncode == 0, "the pull after a failed one still fails: a damaged partial file wedges " \
                                  "the store\n" + show(p)
    _assert_complete(root, slow)


def test_partial_blobs_in_df_fsck_and_prune(slow: Any, tmp_path: Path) -> None:
    """Issue 16 item 3: the blobs of an interrupted pull are shown by system df and fsck (as information,
    not damage) and removed by system prune."""
    root = tmp_path / "root"
    root.mkdir()
    have = _kill_halfway(slow, root, tmp_path)
    parts = _partials(root)
    assert len(parts) == 1 and have > 0
    size = parts[0].stat().st_size
    df = dy(root, "system", "df", "--format", "json")
    assert df.returncode == 0, show(df)
    rows = {r["Type"]: r for r in map(json.loads, df.stdout.splitlines())}
    assert rows["Partial Pulls"]["TotalCount"] == "1", df.stdout
    _rc, rep = fsck_report(root)
    found = [f for f in rep["findings"] if f["code"] == "partial-pull-blob"]
    assert len(found) == 1 and found[0]["severity"] == "info", fmt_findings(rep)
    assert found[0]["path"].endswith(parts[0].name) and str(size) in found[0]["message"], found
    assert not [f for f in rep["findings"] if f["severity"] == "error"], fmt_findings(rep)
    pr = dy(root, "system", "prune", "-f")
    assert pr.returncode == 0, show(pr)
    assert not _partials(root), "system prune left the partial blob"
    df = dy(root, "system", "df", "--format", "json")
    assert "Partial Pulls" not in df.stdout, df.stdout
