"""Differential tests of the layer-archive core against the reference tools.

For every tar of the corpus (:mod:`archive_corpus`):

- our tar-split JSON (uncompressed) is byte-identical to ``tar-split disasm``'s;
- the diffID is the sha256 of the tar, ``tar_bytes`` its length, ``entries`` tar-split's count;
- ``tar-split asm`` of OUR tar-split over OUR extraction rebuilds the tar byte for byte, and so
  does our :func:`assemble` -- except where tar-split itself cannot (sparse entries, a final
  padding cut short), where the exact documented result is asserted instead;
- our extraction equals GNU tar's (``--xattrs --numeric-owner -xp`` as root), with Docker's rules
  applied (times outside 1970..2262 become the epoch except on symlinks, whose times wrap the way
  Go's ``UnixNano`` does; empty-valued xattrs are not created);
- ``size`` is what Docker's ``directory.Size`` walk gives for the extracted tree.

About the tar-split versions. Debian's ``tar-split`` package 0.11.2+ds1 prints
``v0.10.1-4-gf280282``: upstream never regenerated ``version/version.go`` after v0.10.1, so the
binary says v0.10.1 but *is* v0.11.2, what dockerd 20.10.x vendors (moby v20.10.24 vendor.conf:
tar-split 80a436f, v0.11.2). Between the versions in question the disassembler loop
(``tar/asm/disassemble.go``) differs only in how it stores the tail after the end of the archive
(v0.10.x also carried an older, pre-go1.11 ``archive/tar`` fork, whose verdicts on odd headers
differ; that is not papered over -- the installed binary is v0.11.2):

- up to v0.10.1: ``ioutil.ReadAll`` of the rest, stored as ONE segment (``""`` when empty);
- v0.10.2 .. v0.11.3 (3d9db48, CVE-2017-14992): the rest in ``Read`` chunks of at most 1 MiB,
  and then the final ``Read`` that returns ``(0, io.EOF)`` adds one more, EMPTY segment;
- v0.11.4 and later (b637241): as before, without that empty segment.

:func:`cli_flavor` finds out by behaviour which of these the installed binary is, and
:func:`expected_cli_json` turns our (v0.11.2-style) JSON into that flavor's: it rewrites only
the segments after the end of the archive, nothing else.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

import archive_corpus as ac
from dockyard.archive.apply import ApplyResult, apply_layer
from dockyard.archive.tarsplit import assemble
from dockyard.errors import LayerError

pytestmark = pytest.mark.peers

TAR_SPLIT = shutil.which("tar-split")
REQUIRE_PEERS = os.environ.get("DOCKYARD_REQUIRE_PEERS") == "1"


def _need(tool: str | None, what: str) -> None:
    if tool is None:
        msg = f"{what} is not installed"
        if REQUIRE_PEERS:
            pytest.fail(msg + " (DOCKYARD_REQUIRE_PEERS=1)")
        pytest.skip(msg)


@pytest.fixture(autouse=True)
def _peers() -> None:
    _need(TAR_SPLIT, "tar-split")
    if os.geteuid() != 0:
        if REQUIRE_PEERS:
            pytest.fail("the differential corpus needs root (device nodes, chown, trusted.* xattrs)")
        pytest.skip("needs root (device nodes, chown, trusted.* xattrs)")


# ================================================================================ session state
@dataclasses.dataclass
class Ours:
    tar: Path
    data: bytes
    dest: Path | None
    result: ApplyResult | None
    error: LayerError | None
    tarsplit: bytes


class _Session:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.corpus = root / "corpus"
        self.corpus.mkdir()
        self._ours: dict[str, Ours] = {}
        self._cli: dict[str, tuple[int, bytes, str]] = {}
        self._gnu: dict[str, tuple[Path, int, str]] = {}

    def tar(self, name: str) -> Path:
        case = ac.CASE_BY_NAME[name]
        if case.needs_gnu:
            _need(ac.GNU_TAR, "GNU tar")
        return ac.build(name, self.corpus)

    def ours(self, name: str) -> Ours:
        if name not in self._ours:
            tar = self.tar(name)
            dest = self.root / "ours" / name
            dest.mkdir(parents=True)
            buf = io.BytesIO()
            res = err = None
            with open(tar, "rb") as f:
                try:
                    res = apply_layer(f.read, str(dest), buf.write)
                except LayerError as e:
                    err = e
            self._ours[name] = Ours(tar, tar.read_bytes(), dest, res, err, buf.getvalue())
        return self._ours[name]

    def cli_disasm(self, name: str) -> tuple[int, bytes, str]:
        """(returncode, uncompressed JSON, stderr) of ``tar-split disasm``."""
        if name not in self._cli:
            tar = self.tar(name)
            out = self.root / "cli" / f"{name}.json.gz"
            out.parent.mkdir(exist_ok=True)
            with open(tar, "rb") as f:
                p = subprocess.run(
                    [TAR_SPLIT, "disasm", "--no-stdout", "--output", str(out), "-"],
                    stdin=f,
                    capture_output=True,
                    timeout=60,
                )
            js = gzip.decompress(out.read_bytes()) if p.returncode == 0 else b""
            self._cli[name] = (p.returncode, js, p.stderr.decode(errors="replace"))
        return self._cli[name]

    def gnu_extract(self, name: str) -> tuple[Path, int, str]:
        if name not in self._gnu:
            _need(ac.GNU_TAR, "GNU tar")
            dest = self.root / "gnu" / name
            dest.mkdir(parents=True)
            p = subprocess.run(
                [
                    ac.GNU_TAR,
                    "--xattrs",
                    "--xattrs-include=*",
                    "--numeric-owner",
                    "-xpf",
                    str(self.tar(name)),
                    "-C",
                    str(dest),
                ],
                capture_output=True,
                env=dict(os.environ, LC_ALL="C"),
                timeout=60,
            )
            self._gnu[name] = (dest, p.returncode, p.stderr.decode(errors="replace"))
        return self._gnu[name]


@pytest.fixture(scope="session")
def sess(tmp_path_factory: pytest.TempPathFactory) -> _Session:
    return _Session(tmp_path_factory.mktemp("archive-differential"))


OK_CASES = [c.name for c in ac.CASES if c.expect_error is None]
ERROR_CASES = [c.name for c in ac.CASES if c.expect_error is not None]


def _applied(sess: _Session, name: str) -> Ours:
    o = sess.ours(name)
    if o.error is not None:
        pytest.fail(f"apply_layer refused {name}: {type(o.error).__name__}: {o.error}")
    return o


# ================================================================================ tar-split flavor
def _lines(js: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in js.splitlines() if line.strip()]


@functools.cache
def cli_flavor() -> str:
    """Which disassembler tail behaviour the installed tar-split has: "readall" (<= v0.10.1),
    "chunks+empty" (v0.10.2..v0.11.3) or "chunks" (>= v0.11.4)."""
    import tempfile

    def tail(trailing: bytes) -> list[dict[str, object]]:
        tar = ac.entry(ac.header(b"f", size=1), b"x") + ac.END + trailing
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "p.json.gz")
            subprocess.run(
                [TAR_SPLIT, "disasm", "--no-stdout", "--output", out, "-"],
                input=tar,
                check=True,
                capture_output=True,
            )
            with gzip.open(out) as f:
                return _lines(f.read())

    with_garbage = tail(b"garbage")
    without = tail(b"")
    last = base64.b64decode(str(with_garbage[-1]["payload"]))
    if last == b"":
        return "chunks+empty"
    if without[-1]["type"] == 2 and without[-1]["payload"] == "":
        return "readall"
    return "chunks"


def expected_cli_json(ours: bytes, tar: bytes, flavor: str) -> bytes:
    """Our JSON as the installed tar-split version would write it for the same stream.

    Our writer follows v0.11.2 (dockerd 20.10): after the end of the archive, the rest of the
    stream in segments, then one empty segment. Only those trailing lines are rewritten.
    """
    if flavor == "chunks+empty":
        return ours
    lines = ours.splitlines(keepends=True)
    objs = [json.loads(x) for x in lines]
    trailing_len = len(tar) - ac.walk(tar).logical_end - ac.walk(tar).lost_padding
    assert objs[-1] == {"type": 2, "payload": "", "position": len(objs) - 1}, (
        "our JSON must end with an empty segment"
    )
    k = len(objs) - 1  # lines[k:] are the trailing segments (+ the empty one)
    got = 0
    while got < trailing_len:
        k -= 1
        assert objs[k]["type"] == 2
        got += len(base64.b64decode(objs[k]["payload"]))
    assert got == trailing_len
    rest = tar[len(tar) - trailing_len :] if trailing_len else b""
    # "readall": one segment; "chunks": 1 MiB reads, no empty segment at EOF
    payloads = [rest] if flavor == "readall" else [rest[i : i + ac.MiB] for i in range(0, len(rest), ac.MiB)]
    out = b"".join(lines[:k])
    for i, p in enumerate(payloads):
        out += b'{"type":2,"payload":"%s","position":%d}\n' % (base64.b64encode(p), k + i)
    return out


def test_cli_flavor_is_known() -> None:
    assert cli_flavor() in ("readall", "chunks+empty", "chunks")


@pytest.mark.parametrize("trailing", [b"", b"G" * 10])
def test_flavor_rewrite_only_touches_the_tail(tmp_path: Path, trailing: bytes) -> None:
    tar = ac.entry(ac.header(b"f", size=3), b"abc") + ac.END + trailing
    buf = io.BytesIO()
    apply_layer(io.BytesIO(tar).read, str(tmp_path), buf.write)
    ours = buf.getvalue()
    lines = ours.splitlines(keepends=True)
    head = b"".join(lines[:3])  # header segment, file, end-of-archive segment
    assert expected_cli_json(ours, tar, "chunks+empty") == ours
    seg = b'{"type":2,"payload":"%s","position":3}\n' % base64.b64encode(trailing)
    assert expected_cli_json(ours, tar, "readall") == head + seg
    assert expected_cli_json(ours, tar, "chunks") == head + (seg if trailing else b"")


# ================================================================================ the checks
def _describe(line: bytes) -> str:
    o = json.loads(line)
    if o["type"] == 2:
        return f"segment of {len(base64.b64decode(o['payload']))} bytes at position {o['position']}"
    return line[:300].decode(errors="replace")


def _first_difference(a: bytes, b: bytes) -> str:
    la, lb = a.splitlines(), b.splitlines()
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        if x != y:
            return (
                f"first at line {i} of ours {len(la)} / tar-split {len(lb)} lines:\n"
                f"  ours:      {[_describe(z) for z in la[i : i + 4]]}\n"
                f"  tar-split: {[_describe(z) for z in lb[i : i + 4]]}"
            )
    return f"line counts differ: ours {len(la)}, tar-split {len(lb)}"


@pytest.mark.parametrize("name", OK_CASES)
def test_tarsplit_json_identical_to_tar_split(sess: _Session, name: str) -> None:
    o = _applied(sess, name)
    rc, ref, err = sess.cli_disasm(name)
    assert rc == 0, f"tar-split disasm failed: {err}"
    want = expected_cli_json(o.tarsplit, o.data, cli_flavor())
    if want != ref:
        pytest.fail(f"tar-split JSON differs ({cli_flavor()}): {_first_difference(want, ref)}")


@pytest.mark.parametrize("name", OK_CASES)
def test_diff_id_size_and_counts(sess: _Session, name: str) -> None:
    o = _applied(sess, name)
    assert o.result is not None
    assert o.result.diff_id == "sha256:" + hashlib.sha256(o.data).hexdigest()
    assert o.result.tar_bytes == len(o.data)
    rc, ref, err = sess.cli_disasm(name)
    assert rc == 0, err
    assert o.result.entries == sum(1 for x in _lines(ref) if x["type"] == 1)
    assert o.result.size == ac.docker_directory_size(o.dest), (
        "size must be Docker's directory.Size of the diff"
    )


def _expected_reassembly(sess: _Session, name: str, o: Ours) -> tuple[bytes, bool]:
    """(bytes tar-split can rebuild, whether that differs from the tar: a documented limitation)."""
    w = ac.walk(o.data)
    logical: dict[bytes, bytes] = {}
    if any(e.sparse for e in w.entries):
        with tarfile.open(o.tar, encoding="utf-8", errors="surrogateescape") as t:
            for m in t:
                if m.sparse is not None:
                    f = t.extractfile(m)
                    assert f is not None
                    logical[m.name.encode("utf-8", "surrogateescape")] = f.read()
    want = ac.tar_split_reassembly(o.data, logical)
    return want, want != o.data


@pytest.mark.parametrize("name", OK_CASES)
def test_tar_split_asm_of_our_tarsplit_rebuilds_the_tar(sess: _Session, name: str) -> None:
    o = _applied(sess, name)
    gz = sess.root / "asm" / f"{name}.json.gz"
    gz.parent.mkdir(exist_ok=True)
    gz.write_bytes(gzip.compress(o.tarsplit))
    p = subprocess.run(
        [TAR_SPLIT, "asm", "--input", str(gz), "--path", str(o.dest), "--output", "-"],
        capture_output=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    want, limited = _expected_reassembly(sess, name, o)
    if limited:
        assert p.stdout != o.data, "tar-split cannot rebuild this tar; it did?"
    assert p.stdout == want, f"tar-split asm: {len(p.stdout)} bytes, expected {len(want)} (limited={limited})"


@pytest.mark.parametrize("name", OK_CASES)
def test_our_assemble_rebuilds_the_tar(sess: _Session, name: str) -> None:
    o = _applied(sess, name)
    out = io.BytesIO()
    n = assemble(io.BytesIO(o.tarsplit), str(o.dest), out.write)
    want, limited = _expected_reassembly(sess, name, o)
    assert n == len(out.getvalue())
    assert out.getvalue() == want, f"assemble: {n} bytes, expected {len(want)} (limited={limited})"


SPARSE_CASES = [c.name for c in ac.CASES if "sparse" in c.name and c.expect_error is None]


@pytest.mark.parametrize("name", SPARSE_CASES)
def test_sparse_contents_match_python_tarfile(sess: _Session, name: str) -> None:
    """Sparse entries hold their logical content (holes as zeros), as Python's tarfile reads it."""
    o = _applied(sess, name)
    seen = 0
    with tarfile.open(o.tar, encoding="utf-8", errors="surrogateescape") as t:
        for m in t:
            if not m.isreg():
                continue
            f = t.extractfile(m)
            assert f is not None
            rel = ac.go_clean_rel(m.name.encode("utf-8", "surrogateescape"))
            got = (o.dest / os.fsdecode(rel)).read_bytes()
            assert got == f.read(), rel
            seen += m.sparse is not None
    assert seen, "no sparse member found"


def test_the_limitations_are_exercised(sess: _Session) -> None:
    """The corpus does contain tars tar-split cannot rebuild (else the above prove less)."""
    limited = []
    for name in ("gnutar-posix-sparse-1.0", "raw-sparse-pax-0.1", "raw-truncated-final-padding"):
        o = _applied(sess, name)
        if _expected_reassembly(sess, name, o)[1]:
            limited.append(name)
    assert len(limited) == 3, limited


@pytest.mark.parametrize("name", ERROR_CASES)
def test_refused_like_docker(sess: _Session, name: str) -> None:
    """Old GNU sparse ('S') entries: Go's reader hands them to Docker with Typeflag 'S', which
    createTarFile refuses ("unhandled tar header type 83"); tar-split itself accepts them.
    The others tar-split's reader or packer refuses, so Docker cannot register them either."""
    case = ac.CASE_BY_NAME[name]
    o = sess.ours(name)
    rc, _, err = sess.cli_disasm(name)
    if o.error is None:
        pytest.fail(f"{name} was accepted (tar-split disasm: rc={rc} {err.strip()[-100:]})")
    assert isinstance(o.error, LayerError)
    assert re.search(case.expect_error or "", str(o.error)), str(o.error)
    if case.cli_error:
        assert rc != 0 and case.cli_error in err, err
    else:
        assert rc == 0, err


# ================================================================================ vs GNU tar
GNU_CASES = [c.name for c in ac.CASES if c.expect_error is None and c.gnu_compare]


def _docker_mtime(kind: int, gnu_ns: int, header_ns: int | None, scratch: Path) -> int:
    if kind == stat.S_IFLNK:
        # LUtimesNano(timeToTimespec(t)) = t.UnixNano(): wraps outside 1678..2262. GNU tar's value
        # is clamped by the filesystem there, so take the header's (and let the fs clamp it).
        if header_ns is not None and not (0 <= header_ns <= ac.GO_MAX_NS):
            return ac.fs_stored_ns(scratch, ac.go_unix_nano(header_ns))
        return gnu_ns
    # system.Chtimes: before 1970 or after time.Unix(0, 1<<63-1) -> the epoch
    return gnu_ns if 0 <= gnu_ns <= ac.GO_MAX_NS else 0


def compare_with_gnu(
    ours: dict[bytes, ac.Node],
    gnu: dict[bytes, ac.Node],
    explicit: set[bytes],
    hdr_mtimes: dict[bytes, int],
    scratch: Path,
) -> list[str]:
    bad: list[str] = []
    for p in sorted(set(ours) ^ set(gnu)):
        bad.append(f"{p!r}: only in {'ours' if p in ours else 'GNU tar'}")
    for p in sorted(set(ours) & set(gnu)):
        o, g = ours[p], gnu[p]
        if o.kind != g.kind:
            bad.append(f"{p!r}: type {stat.filemode(o.kind)} != {stat.filemode(g.kind)}")
            continue
        if p not in explicit:
            continue  # an implied parent directory: each tool has its own defaults
        for field in ("uid", "gid"):
            if getattr(o, field) != getattr(g, field):
                bad.append(f"{p!r}: {field} {getattr(o, field)} != {getattr(g, field)}")
        if o.kind != stat.S_IFLNK and o.mode != g.mode:
            bad.append(f"{p!r}: mode {o.mode:o} != {g.mode:o}")
        if o.kind in (stat.S_IFREG, stat.S_IFLNK) and o.size != g.size:
            bad.append(f"{p!r}: size {o.size} != {g.size}")
        if o.sha256 != g.sha256:
            bad.append(f"{p!r}: content differs")
        if o.target != g.target:
            bad.append(f"{p!r}: symlink target {o.target!r} != {g.target!r}")
        if o.rdev != g.rdev:
            bad.append(f"{p!r}: rdev {o.rdev} != {g.rdev}")
        want_x = {k: v for k, v in g.xattrs.items() if v != b""}  # Go's mergePAX skips empty values
        if o.xattrs != want_x:
            bad.append(f"{p!r}: xattrs {o.xattrs} != {want_x}")
        want_m = _docker_mtime(o.kind, g.mtime_ns, hdr_mtimes.get(p), scratch)
        if o.mtime_ns != want_m:
            bad.append(f"{p!r}: mtime {o.mtime_ns} != {want_m} (GNU tar: {g.mtime_ns})")
    go, gg = ac.hardlink_groups(ours), ac.hardlink_groups(gnu)
    if go != gg:
        bad.append(f"hard-link groups differ: ours {sorted(map(sorted, go))} GNU {sorted(map(sorted, gg))}")
    return bad


@pytest.mark.parametrize("name", GNU_CASES)
def test_extraction_matches_gnu_tar(sess: _Session, name: str) -> None:
    o = _applied(sess, name)
    gdest, rc, err = sess.gnu_extract(name)
    if rc != 0 and name != "raw-truncated-final-padding":  # GNU tar: "Unexpected EOF in archive"
        pytest.fail(f"GNU tar failed on {name}: {err}")
    hdr = ac.header_mtimes(o.tar)
    explicit = set(hdr) - {b"."}
    bad = compare_with_gnu(ac.snapshot(o.dest), ac.snapshot(gdest), explicit, hdr, sess.root)
    assert not bad, f"{len(bad)} differences:\n" + "\n".join(bad[:40])


def test_gnu_comparison_can_fail(sess: _Session) -> None:
    """The comparison notices a changed mode, a lost xattr and a shifted mtime."""
    name = "gnutar-posix"
    o = _applied(sess, name)
    gdest, rc, err = sess.gnu_extract(name)
    assert rc == 0, err
    hdr = ac.header_mtimes(o.tar)
    ours = ac.snapshot(o.dest)
    ours[b"f1"].mode ^= 0o1
    ours[b"suid"].xattrs = {}
    ours[b"d"].mtime_ns += 1
    bad = compare_with_gnu(ours, ac.snapshot(gdest), set(hdr) - {b"."}, hdr, sess.root)
    assert len(bad) == 3, bad


# ================================================================================ mutations
def test_mutated_archives_agree_with_tar_split(sess: _Session) -> None:
    """Deterministic header mutations: when tar-split refuses a stream we refuse it too (with a
    LayerError, nothing else); when both accept it the tar-split JSON is identical."""
    import random

    seeds = [
        sess.tar(n).read_bytes() for n in ("py-gnu", "py-pax", "py-ustar", "raw-misc", "raw-sparse-pax-0.1")
    ]
    rng = random.Random(7)
    problems: list[str] = []
    work = sess.root / "mutations"
    work.mkdir()
    for i in range(200):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            blk = rng.randrange(len(data) // 512) * 512
            off = blk + rng.choice(
                [
                    rng.randrange(512),
                    100 + rng.randrange(48),
                    156,
                    257 + rng.randrange(8),
                    345 + rng.randrange(40),
                ]
            )
            data[off] = rng.choice([0, 0x20, 0x30 + rng.randrange(10), 0x80, 0xFF, rng.randrange(256)])
        for b in range(0, len(data) - 511, 512):
            if data[b + 257 : b + 262] == b"ustar" and rng.random() < 0.9:
                blk_ = bytearray(data[b : b + 512])
                blk_[148:156] = b" " * 8
                blk_[148:156] = b"%06o\x00 " % sum(blk_)
                data[b : b + 512] = blk_
        tar = bytes(data)
        dest = work / str(i)
        dest.mkdir()
        buf = io.BytesIO()
        ours: bytes | None
        try:
            apply_layer(io.BytesIO(tar).read, str(dest), buf.write)
            ours = buf.getvalue()
        except LayerError:
            ours = None
        except Exception as e:
            problems.append(f"#{i}: {type(e).__name__}: {e}")
            continue
        out = work / f"{i}.json.gz"
        p = subprocess.run(
            [TAR_SPLIT, "disasm", "--no-stdout", "--output", str(out), "-"],
            input=tar,
            capture_output=True,
            timeout=60,
        )
        if p.returncode != 0:
            if ours is not None:
                problems.append(
                    f"#{i}: tar-split refuses ({p.stderr.decode(errors='replace').strip()[-80:]}), we accept"
                )
            continue
        if ours is not None:
            ref = gzip.decompress(out.read_bytes())
            if expected_cli_json(ours, tar, cli_flavor()) != ref:
                problems.append(f"#{i}: JSON differs: {_first_difference(ours, ref)}")
    assert not problems, "\n".join(problems)
