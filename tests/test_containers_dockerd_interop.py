"""Containers, acceptance 3 and 4: dockerd and dockyard use each other's containers.

3. dockyard creates containers (one never started and unnamed, one run to completion with output and a file it
   wrote, one named and detached-then-stopped); a private dockerd 20.10 started on that data-root lists them
   (`docker ps -a --format '{{json .}}'`: IDs, names, states, exit codes), `docker start -a` runs the never
   started one and prints its output, `docker logs` shows the lines dockyard logged, `docker diff`/`docker
   commit` work (the committed image runs in docker and holds the file), `docker rm` removes one completely;
   after dockerd stopped, dockyard reads what dockerd left and `fsck` is clean.
4. The Docker-written dataroot fixture (fx-created: never started; fx-writer: exited 0), dockerd stopped:
   dockyard lists both as the oracle's `docker ps -a` rows say, and for fx-writer gives the same `logs`,
   `diff`, committed layer and `start -a` result as a real dockerd on an identical copy of the fixture;
   `start -a fx-created` (entrypoint /nonexistent/entry) fails cleanly and records the failure; `rm` removes
   both; `fsck` is clean.
"""
from __future__ import annotations

import json
import types
from typing import Any

import pytest

import containerlib as cl
import peers
from conftest import assert_clean_error, mounts_below

pytestmark = [pytest.mark.peers, pytest.mark.timeout(600)]

FX_WRITER = "fd87baca1d0d83eb181d2bb0b86c8f73d19e95d22229e48573f1a9816f28f17a"
FX_CREATED = "b21d6dc391395f5403ec309e5be9897377b6f3eb1be695f6b9c5c8fb70e7ee13"
KEYS = ("type", "mode", "uid", "gid", "size", "linkname", "sha256", "rdev", "xattrs")


# ================================================================================================ acceptance 3
@pytest.fixture(scope="module")
def dy_made(tmp_path_factory) -> Any:
    """A dockyard data-root with three containers, then a private dockerd on it."""
    peers.need_root()
    peers.need("runc")
    base = tmp_path_factory.mktemp("ctr-interop-3")
    root = base / "root"
    root.mkdir()
    dy = cl.Dy(root, base / "exec")
    dy.load_edge()
    never = dy("create", "--network", "none", cl.EDGE_REF, "sh", "-c", "echo ran-by-docker; exit 4").stdout.strip()
    ran = dy("create", "--name", "dy-ran", "--network", "none", cl.EDGE_REF, "sh", "-c",
             "echo out-line-1; echo made-by-dockyard > /app/made.txt; echo err-line >&2; sleep 0.2; "
             "echo out-line-2; exit 3").stdout.strip()
    p = dy("start", "-a", "dy-ran", check=False)
    # (the exit status itself is checked by the tests, through what dockerd reads)
    assert p.stdout == "out-line-1\nout-line-2\n" and p.stderr == "err-line\n", cl.show(p)
    named = dy("run", "-d", "--name", "dy-named", "--network", "none", cl.EDGE_REF, "sh", "-c",
               "echo named-ran; while :; do sleep 1; done").stdout.strip()
    assert cl.wait_for(lambda: "named-ran" in dy("logs", "dy-named").stdout, 15)
    dy("stop", "-t", "1", "dy-named")
    dy_rows = {r["ID"]: r for r in dy.ps()}
    dy_diff = dy("diff", "dy-ran").stdout.splitlines()
    assert not mounts_below(root)
    d = peers.Dockerd(root)
    d.start()
    try:
        yield types.SimpleNamespace(root=root, dy=dy, d=d, never=never, ran=ran, named=named, dy_rows=dy_rows,
                                    dy_diff=dy_diff)
    finally:
        d.cleanup()
        peers.unmount_below(root)


def _docker_rows(d: peers.Dockerd) -> dict[str, dict]:
    out = d.docker("ps", "-a", "--no-trunc", "--format", "{{json .}}").stdout
    return {r["ID"]: r for r in (json.loads(x) for x in out.splitlines() if x.strip())}


def test_dockerd_lists_dockyards_containers(dy_made) -> None:
    rows = _docker_rows(dy_made.d)
    log = dy_made.d.log_tail(3000)
    assert set(rows) == {dy_made.never, dy_made.ran, dy_made.named}, \
        "docker ps -a lists %s\ndockerd log:\n%s" % (sorted(rows), log)
    for cid, dyrow in dy_made.dy_rows.items():
        r = rows[cid]
        assert r["Names"] == dyrow["Names"], (r, dyrow)
        assert r["State"] == dyrow["State"], (r, dyrow)
        assert r["Image"] == cl.EDGE_REF and r["Networks"] == "none"
        assert r["Command"] == dyrow["Command"], "docker %r, dockyard %r" % (r["Command"], dyrow["Command"])
    assert rows[dy_made.never]["State"] == "created" and rows[dy_made.never]["Status"] == "Created"
    assert rows[dy_made.ran]["State"] == "exited" and rows[dy_made.ran]["Status"].startswith("Exited (3) ")
    assert rows[dy_made.named]["Names"] == "dy-named"
    # the exit code dockyard recorded for the stopped one (137 unless dockyard lost it: see the basic tests)
    assert rows[dy_made.named]["Status"].split(")")[0] == dy_made.dy_rows[dy_made.named]["Status"].split(")")[0]
    st = dy_made.d.api("/containers/dy-ran/json")["State"]
    assert (st["Status"], st["ExitCode"], st["Running"]) == ("exited", 3, False)


def test_docker_logs_shows_what_dockyard_logged(dy_made) -> None:
    p = dy_made.d.docker("logs", "dy-ran")
    assert p.stdout == "out-line-1\nout-line-2\n" and p.stderr == "err-line\n", (p.stdout, p.stderr)
    assert dy_made.d.docker("logs", "--tail", "1", "dy-named").stdout == "named-ran\n"


def test_docker_diff_of_a_dockyard_container(dy_made) -> None:
    dk = dy_made.d.docker("diff", "dy-ran").stdout.splitlines()
    assert "A /app/made.txt" in dk, dk
    assert sorted(dk) == sorted(dy_made.dy_diff), "docker diff %s, dockyard diff %s" % (dk, dy_made.dy_diff)


def test_docker_start_attach_runs_a_dockyard_container(dy_made) -> None:
    p = dy_made.d.docker("start", "-a", dy_made.never, check=False)
    assert (p.returncode, p.stdout) == (4, "ran-by-docker\n"), (p.returncode, p.stdout, p.stderr,
                                                               dy_made.d.log_tail(2000))
    st = dy_made.d.api("/containers/%s/json" % dy_made.never)["State"]
    assert (st["Status"], st["ExitCode"]) == ("exited", 4)
    # and the named one, stopped by dockyard, runs again
    p = dy_made.d.docker("start", "dy-named")
    assert dy_made.d.api("/containers/dy-named/json")["State"]["Running"] is True
    dy_made.d.docker("stop", "-t", "1", "dy-named")


def test_docker_commit_of_a_dockyard_container(dy_made) -> None:
    d = dy_made.d
    d.docker("commit", "-m", "from dockyard's container", "dy-ran", "committed-by-docker:1")
    p = d.docker("run", "--rm", "--network", "none", "committed-by-docker:1", "cat", "/app/made.txt")
    assert p.stdout == "made-by-dockyard\n"
    hist = d.api("/images/committed-by-docker:1/history")
    assert hist[0]["Comment"] == "from dockyard's container"


def test_docker_rm_removes_a_dockyard_container(dy_made) -> None:
    paths = cl.container_layer_paths(dy_made.root, dy_made.ran)
    dy_made.d.docker("rm", "dy-ran")
    assert dy_made.ran not in _docker_rows(dy_made.d)
    for k in ("mounts", "rw", "init", "cdir"):
        assert not paths[k].exists(), "docker rm left %s" % paths[k]


def test_dockyard_after_dockerd(dy_made) -> None:
    """Last of the group: dockerd stopped; dockyard reads what it left (its commit, the states it recorded)."""
    dy_made.d.stop()
    dy = dy_made.dy
    p = dy("fsck", check=False)
    assert p.returncode == 0, cl.show(p)
    rows = {r["ID"]: r for r in dy.ps()}
    assert set(rows) == {dy_made.never, dy_made.named}
    assert rows[dy_made.never]["State"] == "exited" and rows[dy_made.never]["Status"].startswith("Exited (4)")
    assert dy("logs", dy_made.never).stdout == "ran-by-docker\n", "dockyard reads docker's json-file log"
    assert dy("run", "--rm", "committed-by-docker:1", "cat", "/app/made.txt").stdout == "made-by-dockyard\n"
    dy("rm", dy_made.never, "dy-named")
    dy("rmi", "committed-by-docker:1")
    assert dy("fsck", check=False).returncode == 0
    assert not cl.leftovers(dy.root, dy.exec_root)


# ================================================================================================ acceptance 4
@pytest.fixture(scope="module")
def fixture_pair(tmp_path_factory) -> Any:
    """Two identical extractions of the Docker-written fixture: `ref` is used by a real dockerd (the expected
    results), `root` by dockyard (dockerd never runs on it)."""
    peers.need_root()
    peers.need("runc")
    base = tmp_path_factory.mktemp("ctr-interop-4")
    ref = peers.extract_dataroot_fixture(base / "ref")
    root = peers.extract_dataroot_fixture(base / "root")
    exp: dict[str, Any] = {}
    d = peers.Dockerd(ref)
    d.start()
    try:
        exp["rows"] = _docker_rows(d)
        lg = d.docker("logs", "fx-writer")
        exp["logs"] = (lg.stdout, lg.stderr)
        exp["diff"] = d.docker("diff", "fx-writer").stdout.splitlines()
        d.docker("commit", "fx-writer", "fx-writer-committed:1")
        save = base / "dk-commit.tar"
        d.docker("save", "-o", str(save), "fx-writer-committed:1")
        exp["commit_entries"] = cl.tar_entries(cl.save_top_layer(save)[0])
        st = d.docker("start", "-a", "fx-writer", check=False)
        exp["start"] = (st.returncode, st.stdout, st.stderr)
        exp["state_after_start"] = d.api("/containers/fx-writer/json")["State"]
        lg = d.docker("logs", "fx-writer")
        exp["logs_after_start"] = (lg.stdout, lg.stderr)
    finally:
        d.cleanup()
        peers.unmount_below(ref)
    dy = cl.Dy(root, base / "exec")
    yield types.SimpleNamespace(root=root, dy=dy, exp=exp, base=base)
    peers.unmount_below(root)


def test_dockyard_lists_dockers_containers(fixture_pair) -> None:
    oracle_rows = {r["ID"]: r for r in (json.loads(x) for x in peers.oracle("dataroot-docker20")["docker_ps_cli"])}
    assert set(oracle_rows) == {FX_WRITER, FX_CREATED}
    rows = {r["ID"]: r for r in fixture_pair.dy.ps()}
    assert set(rows) == set(oracle_rows)
    problems = []
    for cid, o in oracle_rows.items():
        for k in ("Command", "CreatedAt", "Image", "Labels", "LocalVolumes", "Mounts", "Names", "Networks", "Ports",
                  "State"):
            if rows[cid].get(k) != o[k]:
                problems.append("%s %s: docker %r, dockyard %r" % (o["Names"], k, o[k], rows[cid].get(k)))
        if rows[cid]["Status"].split(")")[0] != o["Status"].split(")")[0]:
            problems.append("%s Status: docker %r, dockyard %r" % (o["Names"], o["Status"], rows[cid]["Status"]))
    assert not problems, "\n".join(problems)
    i = fixture_pair.dy.inspect("fx-writer")
    oc = next(c for c in peers.oracle("dataroot-docker20")["containers"] if c["id"] == FX_WRITER)
    assert (i["Id"], i["Name"], i["Image"], i["State"]["Status"], i["State"]["ExitCode"]) == \
        (oc["id"], oc["name"], oc["image"], oc["state"], oc["exit_code"])
    assert [i["Path"]] + i["Args"] == oc["cmd"]


def test_dockyard_logs_of_fx_writer(fixture_pair) -> None:
    p = fixture_pair.dy("logs", "fx-writer")
    assert (p.stdout, p.stderr) == fixture_pair.exp["logs"]


def test_dockyard_diff_of_fx_writer(fixture_pair) -> None:
    dy = fixture_pair.dy("diff", "fx-writer").stdout.splitlines()
    exp = fixture_pair.exp["diff"]
    # every entry of the oracle's rw layer listing is in the diff (whiteouts as D, the rest as A or C)
    oc = next(c for c in peers.oracle("dataroot-docker20")["containers"] if c["id"] == FX_WRITER)
    paths = {"/" + e["path"] for e in oc["rw_layer_diff"] if e["path"] != "."}
    assert paths <= {x.split(" ", 1)[1] for x in exp}, "the reference dockerd's diff misses rw-layer paths"
    deleted = {"/" + e["path"] for e in oc["rw_layer_diff"] if e["type"] == "char" and e.get("rdev") == [0, 0]}
    assert {x for x in dy if x.startswith("D ")} >= {"D " + p for p in deleted}
    assert sorted(dy) == sorted(exp), "dockyard diff vs docker diff of fx-writer:\nmissing %s\nextra %s" % (
        sorted(set(exp) - set(dy)), sorted(set(dy) - set(exp)))


def test_dockyard_commit_of_fx_writer(fixture_pair) -> None:
    dy = fixture_pair.dy
    dy("commit", "fx-writer", "fx-writer-dy:1")
    out = fixture_pair.base / "dy-commit.tar"
    dy("save", "-o", out, "fx-writer-dy:1")
    got = cl.tar_entries(cl.save_top_layer(out)[0])
    # the same upper dir on both sides: even the mtimes must be equal
    diffs = cl.compare_entries(got, fixture_pair.exp["commit_entries"], keys=KEYS, mtime_before=float("inf"))
    assert not diffs, "dockyard's commit of fx-writer vs docker's:\n" + "\n".join(diffs)


def test_dockyard_start_attach_of_fx_writer(fixture_pair) -> None:
    dy = fixture_pair.dy
    p = dy("start", "-a", "fx-writer", check=False)
    exp_rc, exp_out, exp_err = fixture_pair.exp["start"]
    assert (p.returncode, p.stdout, p.stderr) == (exp_rc, exp_out, exp_err), cl.show(p)
    st = dy.inspect("fx-writer")["State"]
    es = fixture_pair.exp["state_after_start"]
    assert (st["Status"], st["ExitCode"], st["Running"]) == (es["Status"], es["ExitCode"], es["Running"])
    p = dy("logs", "fx-writer")
    assert (p.stdout, p.stderr) == fixture_pair.exp["logs_after_start"]
    assert not mounts_below(fixture_pair.root)


def test_dockyard_start_of_fx_created_fails_cleanly(fixture_pair) -> None:
    dy = fixture_pair.dy
    p = dy("start", "-a", "fx-created", check=False)
    assert_clean_error(p, "start of a container whose entrypoint does not exist")
    st = dy.inspect("fx-created")["State"]
    assert st["Running"] is False and st["Pid"] == 0
    assert st["ExitCode"] != 0 and st["Error"], "the failed start is not recorded: %s" % st
    assert not cl.leftovers(dy.root, dy.exec_root)


def test_dockyard_rm_of_dockers_containers(fixture_pair) -> None:
    dy = fixture_pair.dy
    paths = [cl.container_layer_paths(dy.root, c) for c in (FX_WRITER, FX_CREATED)]
    dy("rm", "fx-writer", "fx-created")
    for p in paths:
        for k in ("mounts", "rw", "init", "cdir"):
            assert not p[k].exists(), "rm left %s" % p[k]
    assert dy.ps() == []
    p = dy("fsck", check=False)
    assert p.returncode == 0, cl.show(p)
    assert not cl.leftovers(dy.root, dy.exec_root)
