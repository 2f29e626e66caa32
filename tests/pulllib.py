"""Shared helpers for the pull/push acceptance tests (test_pull_vs_docker, test_push, test_pull_auth,
test_pull_resume, test_pull_bad_responses).

* ``dy`` runs the real CLI (``python -m dockyard --data-root ROOT ...``) in its own session, always with a
  private ``DOCKER_CONFIG`` (the autouse fixture ``isolated_docker_config`` that every module imports sets it
  for the whole test, so neither dockyard, skopeo nor the docker CLI ever read the real user's ~/.docker);
* ``skopeo_copy`` seeds a registry from an OCI fixture layout exactly as the issue says
  (``--all --preserve-digests``);
* ``StoreFacts`` reads what a pull leaves in a data-root (images, layerdb, overlay2 through the random
  cache-ids, repositories.json, distribution/, diff dirs) with plain Python, and ``compare_stores`` lists the
  differences between a dockyard data-root and a dockerd data-root -- byte for byte where Docker's bytes are
  deterministic, through the chainID -> cache-id mapping where they are random;
* Go's json.Marshal and Docker's v2 metadata HMAC rules, re-implemented here from the fact sheet
  (docs/docker-on-disk.md §5) without dockyard code;
* ``LayoutImage``: what an OCI fixture layout says about an image (manifest digest, config, layers).
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES, _dec, _env, dy_cmd, show
from listing import compare_listing, list_tree
from peers import group_pids

OCI = FIXTURES / "oci"
SAVE = FIXTURES / "docker-save"
ORACLE = FIXTURES / "oracle"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT_ALL = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])


# ------------------------------------------------------------------------------------------------ environment
@pytest.fixture(scope="module", autouse=True)
def isolated_docker_config(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A private, empty DOCKER_CONFIG (and containers auth file) for everything a test module runs (module
    scope, so that module-scoped fixtures get it too; a test that needs its own passes env=... to dy)."""
    d = tmp_path_factory.mktemp("dockercfg")
    auth = d / "containers-auth.json"
    auth.write_text('{"auths":{}}')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(d))
        mp.setenv("REGISTRY_AUTH_FILE", str(auth))
        mp.delenv("DOCKYARD_INSECURE_REGISTRIES", raising=False)
        yield d


def dy(root: os.PathLike | str, *args: Any, env: dict[str, str] | None = None, input: bytes | str | None = None,
       timeout: float = 240) -> subprocess.CompletedProcess:
    """Run the CLI in its own session; text output; never raises on a non-zero exit."""
    e = _env()
    e.pop("DOCKYARD_CRASH_AT", None)
    e.pop("DOCKYARD_CRASH_LOG", None)
    assert e.get("DOCKER_CONFIG"), "DOCKER_CONFIG must point to a private dir (isolated_docker_config)"
    if env:
        e.update(env)
    data = input.encode() if isinstance(input, str) else input
    try:
        p = subprocess.run(dy_cmd(*args, root=root), input=data,
                           stdin=None if data is not None else subprocess.DEVNULL, capture_output=True, env=e,
                           cwd="/", timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired as ex:
        raise AssertionError("dockyard %s hung (> %ss)\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(map(str, args)), timeout, _dec(ex.stdout)[-3000:], _dec(ex.stderr)[-3000:])) from None
    return subprocess.CompletedProcess(p.args, p.returncode, _dec(p.stdout), _dec(p.stderr))


def dy_ok(root: os.PathLike | str, *args: Any, **kw: Any) -> subprocess.CompletedProcess:
    p = dy(root, *args, **kw)
    assert p.returncode == 0, show(p)
    assert "Traceback (most recent call last)" not in p.stderr + p.stdout, show(p)
    return p


def clean_error(p: subprocess.CompletedProcess, what: str = "") -> str:
    """A failed command: non-zero exit, exactly one non-empty stderr line 'Error: ...', no traceback; returns it."""
    ctx = " (%s)" % what if what else ""
    assert p.returncode != 0, "expected a failure%s, got rc 0\n%s" % (ctx, show(p))
    assert "Traceback (most recent call last)" not in p.stderr + p.stdout, "Python traceback%s\n%s" % (ctx, show(p))
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, "stderr must hold exactly one non-empty line%s, got %d\n%s" % (ctx, len(lines), show(p))
    assert lines[0].startswith("Error: ") and len(lines[0]) > 10, "not an 'Error: ...' line%s: %r" % (ctx, lines[0])
    return lines[0]


def run_tool(cmd: list[str], *, timeout: float = 180, input: bytes | None = None,
             env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input, env=e)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (rc=%d)\nstdout: %s\nstderr: %s" % (
            " ".join(map(str, cmd)), p.returncode, p.stdout.decode(errors="replace")[-2000:],
            p.stderr.decode(errors="replace")[-3000:]))
    return p


def skopeo_copy(skopeo: str, layout: str, ref: str, dest: str, *, creds: str | None = None) -> None:
    """skopeo copy --all --preserve-digests oci:<fixtures>/oci/<layout>:<ref> docker://<dest>"""
    cmd = [skopeo, "copy", "--all", "--preserve-digests", "--dest-tls-verify=false"]
    if creds:
        cmd += ["--dest-creds", creds]
    cmd += ["oci:%s:%s" % (OCI / layout, ref), "docker://" + dest]
    run_tool(cmd, timeout=180)


def skopeo_raw(skopeo: str, ref: str, *, creds: str | None = None) -> bytes:
    cmd = [skopeo, "inspect", "--raw", "--tls-verify=false"]
    if creds:
        cmd += ["--creds", creds]
    return run_tool([*cmd, "docker://" + ref], timeout=60).stdout


# ------------------------------------------------------------------------------------------------ Go / Docker rules
def go_json(obj: Any) -> str:
    """Go's json.Marshal: compact, keys in the given (struct) order, <>& and U+2028/9 escaped, UTF-8 kept."""
    s = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def docker_hmac_key(username: str = "", password: str = "", auth: str = "", identitytoken: str = "",
                    registrytoken: str = "") -> bytes:
    """distribution/metadata ComputeV2MetadataHMACKey: the ASCII digest string of json(authConfigKeyInput),
    every field omitempty, in struct order."""
    key: dict[str, str] = {}
    for k, v in (("username", username), ("password", password), ("auth", auth),
                 ("identitytoken", identitytoken), ("registrytoken", registrytoken)):
        if v:
            key[k] = v
    return ("sha256:" + hashlib.sha256(go_json(key).encode()).hexdigest()).encode()


def docker_hmac(key: bytes, digest: str, source_repository: str) -> str:
    """ComputeV2MetadataHMAC: hex(HMAC-SHA256(key, Digest ‖ SourceRepository))."""
    return hmac.new(key, (digest + source_repository).encode(), hashlib.sha256).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256((out[-1] + " " + d).encode()).hexdigest())
    return out


def sha256_bytes(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


# ------------------------------------------------------------------------------------------------ OCI layouts
@dataclass
class LayoutImage:
    """One platform image of an OCI fixture layout."""
    manifest_digest: str
    manifest: dict[str, Any]
    config_digest: str
    config: dict[str, Any]
    platform: str
    layer_digests: list[str]
    diff_ids: list[str]


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def layout_top(layout: str, ref: str) -> tuple[str, str]:
    """(digest, mediaType) of index.json's entry named `ref`."""
    idx = json.loads((OCI / layout / "index.json").read_text())
    for d in idx["manifests"]:
        if (d.get("annotations") or {}).get("org.opencontainers.image.ref.name") == ref:
            return d["digest"], d["mediaType"]
    raise AssertionError("%s has no ref %r" % (layout, ref))


def layout_images(layout: str, ref: str) -> list[LayoutImage]:
    """Every platform image reachable from `ref` (an index is followed, nested ones too)."""
    root = OCI / layout
    top, mt = layout_top(layout, ref)
    out: list[LayoutImage] = []

    def walk(digest: str, media_type: str, plat: dict | None) -> None:
        doc = json.loads(_blob(root, digest))
        if media_type in (OCI_INDEX, DOCKER_LIST) or "manifests" in doc:
            for d in doc["manifests"]:
                walk(d["digest"], d["mediaType"], d.get("platform"))
            return
        cfg_raw = _blob(root, doc["config"]["digest"])
        cfg = json.loads(cfg_raw)
        p = plat or {"os": cfg.get("os"), "architecture": cfg.get("architecture"), "variant": cfg.get("variant")}
        pstr = "/".join(x for x in (p.get("os"), p.get("architecture"), p.get("variant")) if x)
        out.append(LayoutImage(digest, doc, doc["config"]["digest"], cfg, pstr,
                               [lay["digest"] for lay in doc["layers"]], cfg["rootfs"]["diff_ids"]))

    walk(top, mt, None)
    return out


# ------------------------------------------------------------------------------------------------ reading stores
def _read(p: Path) -> bytes | None:
    try:
        return p.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _mode(p: Path) -> str:
    return "%04o" % (os.lstat(p).st_mode & 0o7777)


@dataclass
class StoreFacts:
    """What a data-root holds after pulls, read with plain Python."""
    root: Path
    image_ids: list[str] = field(default_factory=list)
    repositories_raw: bytes | None = None
    cache_of: dict[str, str] = field(default_factory=dict)      # chain id -> cache-id
    chain_of_cache: dict[str, str] = field(default_factory=dict)
    chain_of_link: dict[str, str] = field(default_factory=dict)  # l/ link name -> chain id
    image_files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # rel path under image/ -> (mode, norm)
    overlay: dict[str, dict[str, Any]] = field(default_factory=dict)  # chain -> normalised overlay2 facts
    problems: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, root: os.PathLike | str) -> StoreFacts:
        f = cls(Path(root))
        img = f.root / "image" / "overlay2"
        content = img / "imagedb" / "content" / "sha256"
        f.image_ids = sorted("sha256:" + n for n in os.listdir(content)) if content.is_dir() else []
        f.repositories_raw = _read(img / "repositories.json")
        ldb = img / "layerdb" / "sha256"
        for n in sorted(os.listdir(ldb)) if ldb.is_dir() else []:
            cid = (_read(ldb / n / "cache-id") or b"").decode()
            f.cache_of["sha256:" + n] = cid
            f.chain_of_cache[cid] = "sha256:" + n
        ov = f.root / "overlay2"
        for chain, cid in f.cache_of.items():
            link = (_read(ov / cid / "link") or b"").decode()
            if link:
                f.chain_of_link[link] = chain
        # image/: every regular file, with random cache-ids replaced by the chain they stand for and the
        # tar-split (gzip bytes depend on the compressor) compared uncompressed
        for dp, _dns, fns in os.walk(img):
            for n in fns:
                p = Path(dp) / n
                rel = str(p.relative_to(f.root))
                data = p.read_bytes()
                if n == "cache-id" and "/layerdb/sha256/" in rel:
                    data = b"<cache of " + f.chain_of_cache.get(data.decode(), "?").encode() + b">"
                elif n == "tar-split.json.gz":
                    try:
                        data = b"<uncompressed> " + sha256_bytes(gzip.decompress(data)).encode()
                    except (OSError, EOFError) as e:
                        data = b"<bad gzip: %s>" % str(e).encode()
                f.image_files[rel] = (_mode(p), data)
        for chain, cid in f.cache_of.items():
            d = ov / cid
            facts: dict[str, Any] = {}
            if not d.is_dir():
                f.problems.append("layer %s: overlay2/%s missing" % (chain, cid))
                f.overlay[chain] = facts
                continue
            facts["dir_mode"] = _mode(d)
            facts["entries"] = sorted((e, _mode(d / e), "dir" if (d / e).is_dir() else "file")
                                      for e in os.listdir(d))
            link = (_read(d / "link") or b"").decode()
            facts["link_len"] = len(link)
            facts["link_charset_ok"] = bool(re.fullmatch(r"[A-Z2-7]{26}", link))
            lp = ov / "l" / link
            tgt = os.readlink(lp) if link and os.path.islink(lp) else None
            facts["l_target"] = None if tgt is None else tgt.replace(cid, "<own cache-id>")
            lower = _read(d / "lower")
            if lower is None:
                facts["lower"] = None
            else:
                facts["lower"] = [f.chain_of_link.get(x[2:], "?" + x) if x.startswith("l/") else "?" + x
                                  for x in lower.decode().split(":")]
            for e in ("committed",):
                if (d / e).exists():
                    facts[e] = _read(d / e)
            f.overlay[chain] = facts
        return f

    def repositories(self) -> dict[str, Any]:
        return json.loads(self.repositories_raw) if self.repositories_raw else {"Repositories": {}}

    def refs(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for v in self.repositories().get("Repositories", {}).values():
            out.update(v)
        return out

    def distribution(self) -> dict[str, bytes]:
        return {k: v[1] for k, v in self.image_files.items() if "/distribution/" in k}

    def diff_dir(self, chain: str) -> Path:
        return self.root / "overlay2" / self.cache_of[chain] / "diff"

    def config(self, image_id: str) -> dict[str, Any]:
        p = self.root / "image" / "overlay2" / "imagedb" / "content" / "sha256" / image_id.split(":", 1)[1]
        return json.loads(p.read_bytes())

    def chains(self, image_id: str) -> list[str]:
        return chain_ids(self.config(image_id)["rootfs"]["diff_ids"])


def _short(b: bytes, n: int = 300) -> str:
    s = b.decode("utf-8", "replace")
    return s if len(s) <= n else s[:n] + "...(%d bytes)" % len(b)


def compare_image_trees(dy: StoreFacts, dk: StoreFacts, *, limit: int = 40) -> list[str]:
    """Files under image/ (mode + content; cache-ids through the mapping, tar-split uncompressed)."""
    out = []
    a, b = dy.image_files, dk.image_files
    for k in sorted(set(a) | set(b)):
        if k not in a:
            out.append("missing in dockyard: %s (docker: mode %s, %s)" % (k, b[k][0], _short(b[k][1], 120)))
        elif k not in b:
            out.append("extra in dockyard:   %s (mode %s, %s)" % (k, a[k][0], _short(a[k][1], 120)))
        elif a[k] != b[k]:
            if a[k][0] != b[k][0]:
                out.append("mode of %s: docker %s, dockyard %s" % (k, b[k][0], a[k][0]))
            if a[k][1] != b[k][1]:
                out.append("content of %s:\n    docker:   %s\n    dockyard: %s" % (k, _short(b[k][1]), _short(a[k][1])))
        if len(out) >= limit:
            out.append("...")
            break
    return out


def compare_overlay(dy: StoreFacts, dk: StoreFacts) -> list[str]:
    out = []
    if sorted(dy.cache_of) != sorted(dk.cache_of):
        out.append("layer chains differ: dockyard %s, docker %s" % (sorted(dy.cache_of), sorted(dk.cache_of)))
    for chain in sorted(set(dy.overlay) & set(dk.overlay)):
        a, b = dy.overlay[chain], dk.overlay[chain]
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out.append("overlay2 of %s: %s: docker %r, dockyard %r" % (chain[:19], k, b.get(k), a.get(k)))
    dyl = sorted(os.listdir(dy.root / "overlay2")) if (dy.root / "overlay2").is_dir() else []
    dkl = sorted(os.listdir(dk.root / "overlay2")) if (dk.root / "overlay2").is_dir() else []
    if len(dyl) != len(dkl):
        out.append("overlay2/ has %d entries in dockyard, %d in docker" % (len(dyl), len(dkl)))
    return out + dy.problems


def compare_diff_dirs(dy: StoreFacts, dk: StoreFacts) -> list[str]:
    out = []
    for chain in sorted(set(dy.cache_of) & set(dk.cache_of)):
        diffs = compare_listing(list_tree(dy.diff_dir(chain)), list_tree(dk.diff_dir(chain)))
        if diffs:
            out.append("diff dir of %s:\n  %s" % (chain, "\n  ".join(diffs)))
    return out


# ------------------------------------------------------------------------------------------------ pull output
def pull_summary(out: str) -> dict[str, Any]:
    """The parts of `pull` output that docker and dockyard must agree on."""
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    final: dict[str, str] = {}
    for ln in lines:
        m = re.match(r"^([0-9a-f]{12}): (Pull complete|Already exists)$", ln)
        if m:
            final[m.group(1)] = m.group(2)
    return {
        "first": lines[0] if lines else None,
        "digest": next((ln for ln in lines if ln.startswith("Digest: ")), None),
        "status": next((ln for ln in lines if ln.startswith("Status: ")), None),
        "last": lines[-1] if lines else None,
        "layers": final,
    }


# ------------------------------------------------------------------------------------------------ processes
def start_dy(root: os.PathLike | str, *args: Any, out_dir: os.PathLike | str) -> subprocess.Popen:
    """Start the CLI in the background (own session), stdout/stderr into files in out_dir."""
    e = _env()
    assert e.get("DOCKER_CONFIG")
    out = open(Path(out_dir) / "bg.stdout", "wb")  # noqa: SIM115
    err = open(Path(out_dir) / "bg.stderr", "wb")  # noqa: SIM115
    try:
        return subprocess.Popen(dy_cmd(*args, root=root), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=e,
                                cwd="/", start_new_session=True)
    finally:
        out.close()
        err.close()


def sigkill_and_reap(p: subprocess.Popen, grace: float = 5.0) -> list[int]:
    """SIGKILL the CLI process (only it, as a crash would), reap it, wait for its workers (they die with their
    parent) and return whatever of its process group was still alive after `grace` seconds (then killed by
    that group id, which start_dy created)."""
    try:
        p.send_signal(signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait(timeout=30)
    deadline = time.monotonic() + grace
    while True:
        left = group_pids(p.pid)
        if not left:
            return []
        if time.monotonic() > deadline:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(0.2)
            return left
        time.sleep(0.05)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


# ------------------------------------------------------------------------------------------------ registry side
_ACCESS_RE = re.compile(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3}) \S+ "[^"]*" "([^"]*)"')


@dataclass
class Access:
    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    agent: str


def registry_log_size(reg: Any) -> int:
    p = Path(reg.base) / "registry.log"
    return p.stat().st_size if p.exists() else 0


def registry_access(reg: Any, since: int = 0, agent: str = "dockyard/") -> list[Access]:
    """Access-log lines of a DockerRegistry (docker-registry writes them to its log) after byte `since`,
    of clients whose User-Agent contains `agent`."""
    import urllib.parse

    with open(Path(reg.base) / "registry.log", "rb") as f:
        f.seek(since)
        text = f.read().decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        m = _ACCESS_RE.search(line)
        if m and agent in m.group(4):
            u = urllib.parse.urlsplit(m.group(2))
            out.append(Access(m.group(1), urllib.parse.unquote(u.path), urllib.parse.parse_qs(u.query),
                              int(m.group(3)), m.group(4)))
    return out


def blob_uploads(log: list[Access]) -> dict[str, list[Access]]:
    """What a log slice shows of blob uploads: session starts (POST without mount), mounts (POST with
    mount=), data (PATCH), and completions (PUT ...?digest=) -> the digests they name."""
    out: dict[str, list[Access]] = {"start": [], "mount": [], "patch": [], "put": []}
    for a in log:
        if "/blobs/uploads/" not in a.path:
            continue
        if a.method == "POST":
            out["mount" if a.query.get("mount") else "start"].append(a)
        elif a.method == "PATCH":
            out["patch"].append(a)
        elif a.method == "PUT":
            out["put"].append(a)
    return out


def registry_blobs(storage: os.PathLike | str) -> set[str]:
    """Digests of the blobs a filesystem-backed docker-registry stores (…/v2/blobs/sha256/xx/<hex>/data)."""
    base = Path(storage) / "docker" / "registry" / "v2" / "blobs" / "sha256"
    out = set()
    if base.is_dir():
        for pre in os.listdir(base):
            for h in os.listdir(base / pre):
                if (base / pre / h / "data").is_file():
                    out.add("sha256:" + h)
    return out


def http_get(url: str, *, accept: str | None = None, auth: tuple[str, str] | None = None,
             timeout: float = 60) -> bytes:
    import urllib.request

    req = urllib.request.Request(url)
    if accept:
        req.add_header("Accept", accept)
    if auth:
        req.add_header("Authorization", "Basic " + b64("%s:%s" % auth))
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def push_summary(out: str) -> dict[str, Any]:
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    final: dict[str, str] = {}
    for ln in lines:
        m = re.match(r"^([0-9a-f]{12}): (Pushed|Layer already exists|Mounted from \S+)$", ln)
        if m:
            final[m.group(1)] = m.group(2)
    last = re.match(r"^(\S+): digest: (sha256:[0-9a-f]{64}) size: (\d+)$", lines[-1]) if lines else None
    return {"first": lines[0] if lines else None, "layers": final,
            "tag": last.group(1) if last else None, "digest": last.group(2) if last else None,
            "size": int(last.group(3)) if last else None, "last": lines[-1] if lines else None}


# ------------------------------------------------------------------------------------------------ test images
@dataclass
class BuiltImage:
    layers: list[bytes]          # compressed blobs
    tars: list[bytes]            # uncompressed layer tars
    diff_ids: list[str]          # as written in the config (may be made wrong on purpose)
    config: bytes
    manifest: bytes
    media_type: str

    @property
    def config_digest(self) -> str:
        return sha256_bytes(self.config)

    @property
    def manifest_digest(self) -> str:
        return sha256_bytes(self.manifest)

    @property
    def layer_digests(self) -> list[str]:
        return [sha256_bytes(b) for b in self.layers]


def layer_tar(files: dict[str, bytes]) -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 1700000000, 0o644
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def build_image(layer_files: list[dict[str, bytes]], *, diff_ids: list[str] | None = None,
                docker_schema2: bool = False) -> BuiltImage:
    """An image with one gzip layer per dict of files; `diff_ids` replaces the config's (to make it wrong)."""
    tars = [layer_tar(f) for f in layer_files]
    layers = [gzip.compress(t, mtime=0) for t in tars]
    real = [sha256_bytes(t) for t in tars]
    ids = real if diff_ids is None else diff_ids
    config = go_json({"architecture": "amd64", "config": {"Cmd": ["/hello"]}, "created": "2024-01-01T00:00:00Z",
                      "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "layer %d" % i}
                                  for i in range(len(ids))],
                      "os": "linux", "rootfs": {"type": "layers", "diff_ids": ids}}).encode()
    if docker_schema2:
        mt, cmt, lmt = DOCKER_MANIFEST, "application/vnd.docker.container.image.v1+json", \
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
    else:
        mt, cmt, lmt = OCI_MANIFEST, "application/vnd.oci.image.config.v1+json", \
            "application/vnd.oci.image.layer.v1.tar+gzip"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt,
                           "config": {"mediaType": cmt, "digest": sha256_bytes(config), "size": len(config)},
                           "layers": [{"mediaType": lmt, "digest": sha256_bytes(b), "size": len(b)}
                                      for b in layers]}, indent=3).encode()
    return BuiltImage(layers, tars, ids, config, manifest, mt)
