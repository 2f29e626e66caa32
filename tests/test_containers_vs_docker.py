"""Containers, acceptance 2 and 5: the same file operations in a dockyard container and in a container of a
real dockerd 20.10 (one private daemon for the module), from the same image (fx-edge:1), give the same

- `diff` lines (docker's order is that of a Go map, so the lines are compared as sorted lists),
- committed layer (docker save of docker commit vs dockyard save of dockyard commit: tar headers name, type,
  permission bits, uid, gid, size, linkname, content hash, device numbers, xattrs, in order; mtimes only where
  they are not the time of the run), and committed image config,
- export listing (mtimes of the run and of the init files ignored),

and dockyard's commit -> dockyard save -> docker load -> docker run sees the container's changes exactly as a
container of docker's own commit does (acceptance 5).  Also compared with docker: the state recorded for a
container whose start failed, the exit status of such a `run`, --env-file/-e precedence, rmi conflict
messages, inspect/ps shapes.
"""
from __future__ import annotations

import json
import time
import types
from pathlib import Path
from typing import Any

import pytest

import containerlib as cl
import peers

pytestmark = [pytest.mark.peers, pytest.mark.timeout(600)]

KEYS = ("type", "mode", "uid", "gid", "size", "linkname", "sha256", "rdev", "xattrs")
COMMIT_CHANGES = ["-m", "committed by the test", "-c", "ENV COMMITTED=yes", "-c", 'CMD ["cat", "/new/file"]']


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Any:
    peers.need_root()
    peers.need("runc")
    base = tmp_path_factory.mktemp("ctr-vs-docker")
    d = peers.Dockerd(base / "docker-root")
    d.start()
    try:
        d.docker("load", "-i", str(cl.EDGE_TAR))
        dy = cl.Dy(base / "dy-root", base / "dy-exec")
        (base / "dy-root").mkdir()
        dy.load_edge()
        t_start = int(time.time()) - 1
        dk_run = d.docker("run", "--name", "dk-w", "--network", "none", cl.EDGE_REF, "sh", "-c", cl.DIFF_SCRIPT,
                          check=False)
        dy_run = dy("run", "--name", "dy-w", "--network", "none", cl.EDGE_REF, "sh", "-c", cl.DIFF_SCRIPT,
                    check=False)
        yield types.SimpleNamespace(d=d, dy=dy, base=base, t_start=t_start, dk_run=dk_run, dy_run=dy_run, cache={})
    finally:
        d.cleanup()
        peers.unmount_below(base)


def _dk_commit(pair) -> tuple[list[dict], dict]:
    if "dk_commit" not in pair.cache:
        d = pair.d
        d.docker("commit", *COMMIT_CHANGES, "dk-w", "dk-commit:1")
        out = pair.base / "dk-commit.tar"
        d.docker("save", "-o", str(out), "dk-commit:1")
        layer, cfg = cl.save_top_layer(out)
        pair.cache["dk_commit"] = (cl.tar_entries(layer), cfg)
    return pair.cache["dk_commit"]


def _dy_commit(pair) -> tuple[list[dict], dict]:
    if "dy_commit" not in pair.cache:
        dy = pair.dy
        dy("commit", *COMMIT_CHANGES, "dy-w", "dy-commit:1")
        out = pair.base / "dy-commit.tar"
        dy("save", "-o", out, "dy-commit:1")
        layer, cfg = cl.save_top_layer(out)
        pair.cache["dy_commit"] = (cl.tar_entries(layer), cfg)
    return pair.cache["dy_commit"]


def _exports(pair) -> tuple[list[dict], list[dict]]:
    if "exports" not in pair.cache:
        a, b = pair.base / "dk-export.tar", pair.base / "dy-export.tar"
        pair.d.docker("export", "-o", str(a), "dk-w")
        pair.dy("export", "-o", b, "dy-w")
        pair.cache["exports"] = (cl.tar_entries(a), cl.tar_entries(b))
    return pair.cache["exports"]


def _strip(msg: str) -> str:
    msg = msg.strip().splitlines()[0] if msg.strip() else ""
    for pre in ("Error response from daemon: ", "docker: Error response from daemon: ", "Error: "):
        if msg.startswith(pre):
            msg = msg[len(pre):]
    return msg


# ------------------------------------------------------------------------------------------------ acceptance 2
def test_same_script_same_result(pair) -> None:
    assert pair.dk_run.returncode == 0, pair.dk_run.stderr
    assert (pair.dy_run.returncode, pair.dy_run.stdout, pair.dy_run.stderr) == \
        (pair.dk_run.returncode, pair.dk_run.stdout, pair.dk_run.stderr)


def test_diff_lines_match_docker(pair) -> None:
    dk = pair.d.docker("diff", "dk-w").stdout.splitlines()
    dy = pair.dy("diff", "dy-w").stdout.splitlines()
    assert len(dk) > 20
    missing = sorted(set(dk) - set(dy))
    extra = sorted(set(dy) - set(dk))
    assert sorted(dy) == sorted(dk), "dockyard diff differs from docker diff:\nmissing (docker has): %s\n" \
        "extra (docker has not): %s" % (missing, extra)


def test_committed_layer_entries_match_docker(pair) -> None:
    dk, _ = _dk_commit(pair)
    dy, _ = _dy_commit(pair)
    diffs = cl.compare_entries(dy, dk, keys=KEYS, mtime_before=pair.t_start)
    assert not diffs, "committed layer: dockyard vs docker\n" + "\n".join(diffs)
    # sanity: the layer really has the kinds of entries the script made
    kinds = {e["name"].rstrip("/"): e for e in dk}
    assert kinds["wh/recreate-later/.wh..wh..opq"]["type"] == "file"
    assert kinds["new/hard-new"]["type"] == "hardlink" and kinds["new/fifo"]["type"] == "fifo"


def test_committed_image_config_matches_docker(pair) -> None:
    _, dkc = _dk_commit(pair)
    _, dyc = _dy_commit(pair)
    assert sorted(dyc) == sorted(dkc), "config keys: docker %s, dockyard %s" % (sorted(dkc), sorted(dyc))
    for k in ("architecture", "os", "author", "comment"):
        assert dyc.get(k) == dkc.get(k), k
    assert dyc["rootfs"]["diff_ids"][:-1] == dkc["rootfs"]["diff_ids"][:-1]
    assert len(dyc["rootfs"]["diff_ids"]) == len(dkc["rootfs"]["diff_ids"])
    assert len(dyc["history"]) == len(dkc["history"])
    assert dyc["history"][:-1] == dkc["history"][:-1], "the parent's history is copied as it is"
    hk, hy = dkc["history"][-1], dyc["history"][-1]
    assert sorted(hy) == sorted(hk) and {k: v for k, v in hy.items() if k != "created"} == \
        {k: v for k, v in hk.items() if k != "created"}
    for part in ("config", "container_config"):
        a = {k: v for k, v in dkc[part].items() if k != "Hostname"}
        b = {k: v for k, v in dyc[part].items() if k != "Hostname"}
        assert b == a, "%s: docker %s\ndockyard %s" % (part, a, b)


def test_export_listing_matches_docker(pair) -> None:
    dk, dy = _exports(pair)
    init = peers.INIT_LAYER_PATHS | {"dev", "etc"}
    # mtimes of the init files and of what the run changed are volatile; the rest are the image's
    diffs = [x for x in cl.compare_entries(dy, dk, keys=KEYS, mtime_before=pair.t_start)
             if not any(x.startswith("%r: mtime" % p) for p in init)]
    assert not diffs, "export: dockyard vs docker\n" + "\n".join(diffs)


def test_tar_header_modes_carry_the_file_type_bits(pair) -> None:
    """Docker's tar writer puts the file-type bits into the header mode (0o40755, 0o100644, ...; fact sheet
    §7.5); dockyard's commit and export tars should look the same."""
    out = []
    for what, (dk, dy) in (("commit", (_dk_commit(pair)[0], _dy_commit(pair)[0])), ("export", _exports(pair))):
        bits = {e["name"]: e["mode_type_bits"] for e in dk}
        bad = [(e["name"], bits[e["name"]], e["mode_type_bits"]) for e in dy
               if e["name"] in bits and bits[e["name"]] != e["mode_type_bits"]]
        if bad:
            out.append("%s: %d of %d headers differ, e.g. (name, docker type bits, dockyard) %s" % (
                what, len(bad), len(dy), bad[:5]))
    assert not out, "\n".join(out)


# ------------------------------------------------------------------------------------------------ acceptance 5
def test_dockyard_commit_runs_in_docker(pair) -> None:
    """dockyard commit -> dockyard save -> docker load -> docker run sees the changes, exactly as in a
    container of docker's own commit."""
    _dk_commit(pair)
    _, dyc = _dy_commit(pair)
    d = pair.d
    # a different name in docker, so that docker's own image and dockyard's are both there
    pair.dy("tag", "dy-commit:1", "dy-commit-in-docker:1")
    save = pair.base / "dy-commit-for-docker.tar"
    pair.dy("save", "-o", save, "dy-commit-in-docker:1")
    p = d.docker("load", "-i", str(save))
    assert "dy-commit-in-docker:1" in peers.loaded_refs(p.stdout), p.stdout
    insp = d.api("/images/dy-commit-in-docker:1/json")
    assert insp["RootFS"]["Layers"] == dyc["rootfs"]["diff_ids"]
    dk_view = d.docker("run", "--rm", "--network", "none", "dk-commit:1", "sh", "-c", cl.CHECK_SCRIPT)
    dy_view = d.docker("run", "--rm", "--network", "none", "dy-commit-in-docker:1", "sh", "-c", cl.CHECK_SCRIPT)
    assert "absent" in dk_view.stdout and "/new/file regular file" in dk_view.stdout, dk_view.stdout
    assert dy_view.stdout == dk_view.stdout, "docker sees other files in dockyard's commit:\n--- docker's commit\n" \
        "%s\n--- dockyard's commit\n%s" % (dk_view.stdout, dy_view.stdout)
    # the -c changes: CMD and ENV
    assert d.docker("run", "--rm", "--network", "none", "dy-commit-in-docker:1").stdout == "top\n"
    env = d.docker("run", "--rm", "--network", "none", "dy-commit-in-docker:1", "env").stdout.split()
    assert "COMMITTED=yes" in env


# ------------------------------------------------------------------------------------------------ more vs docker
@pytest.mark.parametrize("case", ["missing-command", "bad-user"])
def test_failed_start_is_recorded_as_docker_does(pair, case: str) -> None:
    args = {"missing-command": [cl.EDGE_REF, "/nonexistent/cmd"],
            "bad-user": ["-u", "nosuchuser", cl.EDGE_REF, "true"]}[case]
    name = "failed-" + case
    dk = pair.d.docker("run", "--name", name, "--network", "none", *args, check=False)
    dy = pair.dy("run", "--name", name, "--network", "none", *args, check=False)
    dks = pair.d.api("/containers/%s/json" % name)["State"]
    dys = pair.dy.inspect(name)["State"]
    problems = []
    if dy.returncode != dk.returncode:
        problems.append("exit status of run: docker %d, dockyard %d" % (dk.returncode, dy.returncode))
    for k in ("Status", "Running", "Pid", "ExitCode", "StartedAt", "FinishedAt"):
        if dys.get(k) != dks.get(k):
            problems.append("State.%s: docker %r, dockyard %r" % (k, dks.get(k), dys.get(k)))
    # the error names what went wrong, as docker's does
    key = "/nonexistent/cmd" if case == "missing-command" else "unable to find user nosuchuser"
    assert key in dks["Error"]
    if key not in dys.get("Error", ""):
        problems.append("State.Error %r does not mention %r (docker: %r)" % (dys.get("Error"), key, dks["Error"]))
    if key not in dy.stderr:
        problems.append("the error message of run %r does not mention %r (docker: %r)" % (
            dy.stderr.strip(), key, dk.stderr.strip()))
    assert not problems, "\n".join(problems)


def test_env_file_and_e_precedence_as_docker(pair, tmp_path: Path) -> None:
    ef = tmp_path / "env.list"
    ef.write_text("# comment\nFROM_FILE=1\nBOTH=from-file\nFX_ENV=from-file\n")
    args = ["--rm", "--network", "none", "--env-file", str(ef), "-e", "BOTH=from-flag", cl.EDGE_REF, "env"]
    dk = sorted(x for x in pair.d.docker("run", *args).stdout.splitlines() if not x.startswith("HOSTNAME="))
    dy = sorted(x for x in pair.dy("run", *args).stdout.splitlines() if not x.startswith("HOSTNAME="))
    assert dy == dk


def test_rmi_conflict_messages_as_docker(pair) -> None:
    """With containers using fx-edge:1 on both sides, rmi by ID and by its only tag fail as in docker."""
    dk_cid = pair.d.docker("inspect", "-f", "{{.Id}}", "dk-w").stdout.strip()
    dy_cid = pair.dy.cid("dy-w")
    # stopped containers only, on both sides, for stable messages
    for ref in (cl.edge_id(), cl.EDGE_REF):
        dk = pair.d.docker("rmi", ref, check=False)
        dy = pair.dy("rmi", ref, check=False)
        assert dk.returncode != 0
        exp = _strip(dk.stderr)
        # docker names the most recent container using the image; map docker's container IDs to ours
        for c in pair.d.api("/containers/json?all=1"):
            exp = exp.replace(c["Id"][:12], "<cid>")
        got = _strip(dy.stderr)
        for c in pair.dy.ps():
            got = got.replace(c["ID"][:12], "<cid>")
        assert dy.returncode != 0 and got == exp, "rmi %s: docker %r, dockyard rc %d %r" % (
            ref, dk.stderr.strip(), dy.returncode, dy.stderr.strip() or dy.stdout.strip())
    assert dk_cid and dy_cid


def test_inspect_and_ps_shapes_as_docker(pair) -> None:
    dk = pair.d.api("/containers/dk-w/json")
    dy = pair.dy.inspect("dy-w")
    problems = []
    for part, a, b in (("top level", dk, dy), ("State", dk["State"], dy["State"]),
                       ("Config", dk["Config"], dy["Config"]), ("HostConfig", dk["HostConfig"], dy["HostConfig"])):
        missing = [k for k in a if k not in b]
        if missing:
            problems.append("%s: keys docker has and dockyard lacks: %s" % (part, missing))
    for k in ("Path", "Args", "Name", "Image", "Driver", "Platform"):
        if (dk[k] if k != "Name" else dk[k].replace("dk-w", "dy-w")) != dy.get(k):
            problems.append("%s: docker %r, dockyard %r" % (k, dk[k], dy.get(k)))
    for k in ("Status", "Running", "ExitCode", "Error", "Pid"):
        if dk["State"][k] != dy["State"].get(k):
            problems.append("State.%s: docker %r, dockyard %r" % (k, dk["State"][k], dy["State"].get(k)))
    for k in dk["Config"]:
        if k != "Hostname" and dk["Config"][k] != dy["Config"].get(k):
            problems.append("Config.%s: docker %r, dockyard %r" % (k, dk["Config"][k], dy["Config"].get(k)))
    rows = [json.loads(x) for x in pair.d.docker("ps", "-a", "--no-trunc", "--format", "{{json .}}").stdout.splitlines()]
    dkrow = next(r for r in rows if r["Names"] == "dk-w")
    dyrow = next(r for r in pair.dy.ps() if r["Names"] == "dy-w")
    missing = [k for k, v in dkrow.items() if v is not None and k not in dyrow]
    if missing:
        problems.append("ps --format json: keys docker prints and dockyard lacks: %s" % missing)
    for k in ("Command", "Image", "Labels", "LocalVolumes", "Mounts", "Networks", "Ports", "State"):
        if dkrow[k] != dyrow.get(k):
            problems.append("ps %s: docker %r, dockyard %r" % (k, dkrow[k], dyrow.get(k)))
    if dkrow["Status"].split(")")[0] != dyrow["Status"].split(")")[0]:
        problems.append("ps Status: docker %r, dockyard %r" % (dkrow["Status"], dyrow["Status"]))
    assert not problems, "\n".join(problems)
