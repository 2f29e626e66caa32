"""Acceptance (auth, 3): login / pull / push / logout against a real docker-registry with htpasswd (Basic) auth
and one behind a Bearer token service (tests/registry_servers.JWTTokenServer, RS256 JWTs the registry
verifies; it hands out refresh tokens, so logins there store an identity token).

The oracle for config.json and for the HMAC of pushed blobs is the real docker CLI + a private dockerd 20.10
doing the same (login, load, push, logout) against the same registries, each with its own DOCKER_CONFIG.
The password contains `&`, `<` and `>`, which Go's json.Marshal escapes in the HMAC key's JSON.
"""
from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import types
from pathlib import Path
from typing import Any

import pytest

import peers
from conftest import diff_snapshots
from faultlib import snapshot
from pulllib import (
    SAVE,
    StoreFacts,
    clean_error,
    docker_hmac,
    docker_hmac_key,
    dy,
    dy_ok,
    isolated_docker_config,  # noqa: F401  (autouse fixture)
    layout_images,
    sha256_bytes,
    skopeo_copy,
    skopeo_raw,
)
from registry_servers import DockerRegistry, FakeServer, JWTTokenServer, htpasswd_line, need

pytestmark = [pytest.mark.peers, pytest.mark.timeout(600)]

USER, PASSWORD = "carol", "p&ss<w>rd"
KINDS = ["htpasswd", "token"]
PUSH_FIXTURE = "fx-dup.docker.tar"  # small; loaded, tagged into the registry and pushed


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    peers.need_root()
    need("docker-registry")
    skopeo = need("skopeo")
    base = tmp_path_factory.mktemp("auth")
    ht = base / "htpasswd"
    ht.write_text(htpasswd_line(USER, PASSWORD) + "\n" + htpasswd_line("other", "secret") + "\n")
    ts = JWTTokenServer(base / "token", {USER: PASSWORD, "other": "secret"})
    srv = FakeServer(ts).start()
    ts.server = srv
    regs: dict[str, DockerRegistry] = {}
    d = None
    try:
        regs["htpasswd"] = DockerRegistry(base / "ht", htpasswd=ht).start()
        regs["token"] = DockerRegistry(base / "tok", token=ts).start()
        for _kind, reg in regs.items():
            skopeo_copy(skopeo, "fx-shared.oci", "a", "%s/ns/shared:a" % reg.addr, creds="%s:%s" % (USER, PASSWORD))
        d = peers.Dockerd(base / "docker")
        d.start()
        d.docker("load", "-i", str(SAVE / PUSH_FIXTURE))
        yield types.SimpleNamespace(base=base, regs=regs, ts=ts, d=d, skopeo=skopeo)
    finally:
        if d is not None:
            d.cleanup()
        for reg in regs.values():
            reg.stop()
        srv.stop()


def docker_cli(e: Any, config: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    """The real docker CLI against our private dockerd, with the given DOCKER_CONFIG."""
    env = dict(os.environ)
    env.update(e.d.env)
    env["DOCKER_CONFIG"] = str(config)
    return subprocess.run([need("docker"), *args], capture_output=True, input=input, env=env, timeout=180)


def _cfg_dir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    return d


def _mask(text: str) -> str:
    return re.sub(r'"identitytoken": "[^"]+"', '"identitytoken": "<token>"', text)


def _key_from_config(cfg: Path, host: str) -> bytes:
    """Docker's HMAC key for the credentials the docker CLI sends from this config.json (auth decoded into
    username + password, identitytoken as it is)."""
    entry = json.loads((cfg / "config.json").read_text())["auths"][host]
    user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
    return docker_hmac_key(username=user, password=pw, identitytoken=entry.get("identitytoken", ""))


def _dy_env(cfg: Path) -> dict[str, str]:
    return {"DOCKER_CONFIG": str(cfg)}


def _prepared_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    dy_ok(root, "load", "-i", str(SAVE / PUSH_FIXTURE))
    return root


def _fixture_image_id() -> str:
    return peers.oracle(PUSH_FIXTURE)["images"][0]["id"]


# ------------------------------------------------------------------------------------------------ not logged in
@pytest.mark.parametrize("kind", KINDS)
def test_without_login_pull_and_push_fail_clearly(env: Any, kind: str, tmp_path: Path) -> None:
    reg = env.regs[kind]
    cfg = _cfg_dir(tmp_path, "cfg")
    root = _prepared_root(tmp_path)
    dy_ok(root, "tag", _fixture_image_id(), "%s/ns/anon:1" % reg.addr)
    before = snapshot(root)
    p = dy(root, "pull", "%s/ns/shared:a" % reg.addr, env=_dy_env(cfg))
    line = clean_error(p, "pull without login")
    assert "unauthorized" in line.lower(), line
    assert reg.addr in line, "the error does not name the registry: %r" % line
    p = dy(root, "push", "%s/ns/anon:1" % reg.addr, env=_dy_env(cfg))
    line = clean_error(p, "push without login")
    assert "unauthorized" in line.lower(), line
    diffs = [x for x in diff_snapshots(before, snapshot(root)) if not x.split()[1].startswith("tmp")]
    assert not diffs, "a refused pull/push changed the store:\n" + "\n".join(diffs)
    assert not (cfg / "config.json").exists()


# ------------------------------------------------------------------------------------------------ wrong password
@pytest.mark.parametrize("kind", KINDS)
def test_wrong_credentials_are_refused(env: Any, kind: str, tmp_path: Path) -> None:
    reg = env.regs[kind]
    cfg, dcfg = _cfg_dir(tmp_path, "cfg"), _cfg_dir(tmp_path, "dockercfg")
    root = tmp_path / "root"
    root.mkdir()
    p = dy(root, "login", "-u", USER, "--password-stdin", reg.addr, input="wrong-" + PASSWORD, env=_dy_env(cfg))
    line = clean_error(p, "login with a wrong password")
    assert "unauthorized" in line.lower(), line
    q = docker_cli(env, dcfg, "login", "-u", USER, "--password-stdin", reg.addr, input=b"wrong")
    assert q.returncode != 0
    assert (cfg / "config.json").exists() == (dcfg / "config.json").exists() is False
    # a good login stays as it was when a later login fails (docker does the same)
    dy_ok(root, "login", "-u", USER, "--password-stdin", reg.addr, input=PASSWORD, env=_dy_env(cfg))
    good = (cfg / "config.json").read_bytes()
    p = dy(root, "login", "-u", USER, "--password-stdin", reg.addr, input="nope", env=_dy_env(cfg))
    clean_error(p, "second login with a wrong password")
    assert (cfg / "config.json").read_bytes() == good
    # an unknown user as well
    p = dy(root, "login", "-u", "nobody", "--password-stdin", reg.addr, input=PASSWORD, env=_dy_env(cfg))
    assert "unauthorized" in clean_error(p, "unknown user").lower()


# ------------------------------------------------------------------------------------------------ the whole flow
@pytest.mark.parametrize("kind", KINDS)
def test_login_pull_push_logout(env: Any, kind: str, tmp_path: Path) -> None:
    reg = env.regs[kind]
    host = reg.addr
    cfg, dcfg = _cfg_dir(tmp_path, "cfg"), _cfg_dir(tmp_path, "dockercfg")
    root = _prepared_root(tmp_path)

    # login: the same config.json as the docker CLI writes (identity tokens are random)
    p = dy_ok(root, "login", "-u", USER, "--password-stdin", host, input=PASSWORD, env=_dy_env(cfg))
    assert p.stdout.strip().splitlines()[-1] == "Login Succeeded", p.stdout
    q = docker_cli(env, dcfg, "login", "-u", USER, "--password-stdin", host, input=PASSWORD.encode())
    assert q.returncode == 0, q.stderr
    mine, theirs = (cfg / "config.json").read_text(), (dcfg / "config.json").read_text()
    assert _mask(mine) == _mask(theirs), "config.json\n  docker:   %r\n  dockyard: %r" % (theirs, mine)
    assert stat.S_IMODE((cfg / "config.json").stat().st_mode) == stat.S_IMODE((dcfg / "config.json").stat().st_mode)
    entry = json.loads(mine)["auths"][host]
    if kind == "htpasswd":
        assert entry == {"auth": base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()}
    else:  # the token service handed out a refresh token: stored as identitytoken, the password is not kept
        assert entry["auth"] == base64.b64encode((USER + ":").encode()).decode() and entry["identitytoken"]

    # pull
    img = layout_images("fx-shared.oci", "a")[0]
    dy_ok(root, "pull", "%s/ns/shared:a" % host, env=_dy_env(cfg))
    facts = StoreFacts.read(root)
    assert img.config_digest in facts.image_ids
    assert facts.refs()["%s/ns/shared:a" % host] == img.config_digest
    assert facts.refs()["%s/ns/shared@%s" % (host, img.manifest_digest)] == img.config_digest

    # push: manifest readable with the credentials; distribution/ HMACs keyed by these credentials
    name = "%s/ns/dup" % host
    dy_ok(root, "tag", _fixture_image_id(), name + ":1")
    p = dy_ok(root, "push", name + ":1", env=_dy_env(cfg))
    raw = skopeo_raw(env.skopeo, name + ":1", creds="%s:%s" % (USER, PASSWORD))
    assert ("digest: %s size: %d" % (sha256_bytes(raw), len(raw))) in p.stdout.splitlines()[-1], p.stdout
    key = _key_from_config(cfg, host)
    facts = StoreFacts.read(root)
    layer_digests = [x["digest"] for x in json.loads(raw)["layers"]]
    recs = {k: json.loads(v) for k, v in facts.distribution().items() if "/v2metadata-by-diffid/" in k}
    seen = 0
    for lst in recs.values():
        for e in lst:
            if e["SourceRepository"] == name:
                seen += 1
                assert e["Digest"] in layer_digests
                assert e["HMAC"] == docker_hmac(key, e["Digest"], name), "HMAC of %s (key from %s)" % (e, mine)
    assert seen == len(set(layer_digests)), recs

    # dockerd pushing with its own login records HMACs by the same rule (so the rule above is Docker's)
    dkname = "%s/ns/dkdup" % host
    assert docker_cli(env, dcfg, "tag", _fixture_image_id(), dkname + ":1").returncode == 0
    q = docker_cli(env, dcfg, "push", dkname + ":1")
    assert q.returncode == 0, q.stderr
    dkfacts = StoreFacts.read(env.d.data_root)
    dkey = _key_from_config(dcfg, host)
    dk_recs = [e for k, v in dkfacts.distribution().items() if "/v2metadata-by-diffid/" in k
               for e in json.loads(v) if e["SourceRepository"] == dkname]
    assert dk_recs and all(e["HMAC"] == docker_hmac(dkey, e["Digest"], dkname) for e in dk_recs), dk_recs

    # logout: the entry is gone, as with the docker CLI
    p = dy_ok(root, "logout", host, env=_dy_env(cfg))
    q = docker_cli(env, dcfg, "logout", host)
    assert q.returncode == 0, q.stderr
    assert p.stdout.strip() == q.stdout.decode().strip() == "Removing login credentials for %s" % host
    mine, theirs = (cfg / "config.json").read_text(), (dcfg / "config.json").read_text()
    assert host not in json.loads(mine)["auths"]
    assert mine == theirs, "config.json after logout\n  docker:   %r\n  dockyard: %r" % (theirs, mine)
    p = dy_ok(root, "logout", host, env=_dy_env(cfg))
    assert p.stdout.strip() == "Not logged in to %s" % host

    # and without credentials again, a clear refusal
    p = dy(root, "pull", "%s/ns/shared:a" % host, env=_dy_env(cfg))
    assert "unauthorized" in clean_error(p, "pull after logout").lower()
