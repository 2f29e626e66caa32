"""Focused unit tests of the layer-archive core (no peers and no fixtures needed; most run as any user).

The expectations come from Docker 20.10's pkg/archive (Unpack, createTarFile, the overlay
whiteout converter, system.Chtimes/Mkdev), Go's archive/tar and path/filepath, and
daemon/graphdriver's directory.Size -- restated here, never taken from the code under test.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import io
import json
import os
import random
import stat
import tracemalloc
from pathlib import Path

import pytest

import archive_corpus as ac
from archive_corpus import END, entry, gnu_long, pax_entry
from dockyard.archive.apply import ApplyResult, apply_layer
from dockyard.archive.fsutil import clean_relative, go_clean
from dockyard.archive.tarsplit import DuplicatePath, assemble
from dockyard.errors import LayerError
from dockyard.gojson import format_rfc3339nano, go_string

# pure unit tests: they run as any user and without the fixture tree; the few that chown, mknod or set trusted.*
# xattrs need root (a missing root fails them under DOCKYARD_REQUIRE_PEERS=1, see conftest.py)
pytestmark = pytest.mark.unit
needs_root = pytest.mark.needs_root

# entries are owned by whoever runs the test unless a test says otherwise (as root: 0:0, as Docker's images are),
# so an unprivileged run needs no chown
header = functools.partial(ac.header, uid=os.getuid(), gid=os.getgid())


# ================================================================================ helpers
def F(name: bytes, data: bytes = b"x", **kw: object) -> bytes:
    return entry(header(name, size=len(data), **kw), data)  # type: ignore[arg-type]


def D(name: bytes, **kw: object) -> bytes:
    return entry(header(name, typeflag=b"5", **kw))  # type: ignore[arg-type]


def SL(name: bytes, target: bytes, **kw: object) -> bytes:
    return entry(header(name, typeflag=b"2", linkname=target, **kw))  # type: ignore[arg-type]


def HL(name: bytes, target: bytes, **kw: object) -> bytes:
    return entry(header(name, typeflag=b"1", linkname=target, **kw))  # type: ignore[arg-type]


def apply_bytes(data: bytes, dest: Path) -> tuple[ApplyResult, list[dict[str, object]]]:
    dest.mkdir(parents=True, exist_ok=True)
    out = io.BytesIO()
    r = apply_layer(io.BytesIO(data).read, str(dest), out.write)
    return r, [json.loads(x) for x in out.getvalue().splitlines()]


def lst(p: Path) -> os.stat_result:
    return os.lstat(p)


def crc64_iso(data: bytes) -> bytes:
    """Go's hash/crc64 with the ISO table, Sum() big-endian (what tar-split stores)."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0xD800000000000000 if c & 1 else 0)
        table.append(c)
    crc = 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return (crc ^ 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")


# ================================================================================ hostile input
@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path]:
    dest = tmp_path / "dest"
    dest.mkdir()
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "file").write_bytes(b"precious")
    (canary / "sub").mkdir()
    os.utime(canary / "sub", ns=(1, 1_000_000_000))
    os.utime(canary, ns=(1, 1_000_000_000))
    return dest, canary


def _no_atime(snap: dict[bytes, ac.Node]) -> dict[bytes, ac.Node]:
    return {p: dataclasses.replace(n, atime_ns=0) for p, n in snap.items()}  # reading changes atimes


def _hostile(canary: Path) -> dict[str, bytes]:
    c = os.fsencode(canary)
    return {
        "absolute": F(b"/abs-evil"),
        "absolute-root-dir": D(b"/"),
        "dotdot": F(b"../canary/evil"),
        "dotdot-nested": F(b"a/../../canary/evil"),
        "dotdot-dir": D(b".."),
        "dotdot-deep-in-long-name": gnu_long(b"L", b"a/b/../../../canary/evil") + F(b"short", fmt="gnu"),
        "dotdot-in-pax-path": pax_entry([(b"path", b"../canary/evil")]) + F(b"short"),
        "symlink-relative-escape": SL(b"ln", b"../canary") + F(b"ln/evil"),
        "symlink-absolute": SL(b"ln", c) + F(b"ln/evil"),
        "symlink-deep": D(b"d/") + SL(b"d/ln", b"../../canary") + F(b"d/ln/evil"),
        "symlink-then-dir": SL(b"ln", c) + D(b"ln/sub/"),
        "symlink-then-symlink": SL(b"ln", c) + SL(b"ln/s", b"x"),
        "symlink-then-fifo": SL(b"ln", c) + entry(header(b"ln/p", typeflag=b"6")),
        "symlink-then-whiteout": SL(b"ln", c) + F(b"ln/.wh.file", b""),
        "symlink-then-opaque": SL(b"ln", c) + F(b"ln/.wh..wh..opq", b""),
        "symlink-then-hardlink-through": SL(b"ln", c) + HL(b"x", b"ln/file"),
        "symlink-then-hardlink-into": F(b"f") + SL(b"ln", c) + HL(b"ln/new", b"f"),
        "symlink-to-dotdot-then-file": SL(b"up", b"..") + F(b"up/canary/evil"),
        "hardlink-outside-relative": HL(b"hl", b"../canary/file"),
        "hardlink-outside-absolute": HL(b"hl", c + b"/file"),
        "hardlink-to-later-entry": HL(b"l", b"f") + F(b"f"),
        "hardlink-to-directory": D(b"d/") + HL(b"l", b"d"),
        "hardlink-to-implied-directory": F(b"d/f") + HL(b"l", b"d"),
        "file-as-directory": F(b"f") + F(b"f/x"),
        "whiteout-of-dot": F(b".wh..", b""),
        "whiteout-of-dotdot": F(b"a/.wh...", b""),
        "whiteout-of-nothing": F(b".wh.", b""),
        "whiteout-of-created-path": F(b"x") + F(b".wh.x", b""),
        "dot-as-regular-file": F(b".", b"x"),
    }


HOSTILE = list(_hostile(Path("/x")))


@needs_root
@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_is_refused_and_nothing_escapes(arena: tuple[Path, Path], case: str) -> None:
    dest, canary = arena
    before = _no_atime(ac.snapshot(canary))
    cst = lst(canary)
    siblings = sorted(os.listdir(dest.parent))
    data = _hostile(canary)[case] + END
    with pytest.raises(LayerError):
        apply_bytes(data, dest)
    assert sorted(os.listdir(dest.parent)) == siblings
    after = _no_atime(ac.snapshot(canary))
    assert after == before, "the canary directory changed"
    assert (lst(canary).st_mtime_ns, lst(canary).st_mode) == (cst.st_mtime_ns, cst.st_mode)
    assert os.listxattr(canary) == []
    assert lst(canary / "file").st_nlink == 1


@needs_root  # implied parent directories are created root-owned, as Docker does
@pytest.mark.parametrize(
    "first,second",
    [(b"a", b"./a"), (b"d/", b"d"), (b"a/b", b"a//b"), (b"x", b"x/"), (b"e", b"d/../e"), (b"./q/.", b"q")],
)
def test_duplicate_paths_are_refused_before_the_second_is_applied(
    tmp_path: Path, first: bytes, second: bytes
) -> None:
    data = F(first, b"1") + F(second, b"22") + END
    with pytest.raises(DuplicatePath, match="duplicates of file paths not supported"):
        apply_bytes(data, tmp_path / "d")
    name = go_clean(first).decode()
    assert (tmp_path / "d" / name).read_bytes() == b"1"


# ================================================================================ malformed input
def _fix_checksum(blk: bytes) -> bytes:
    b = bytearray(blk)
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\x00 " % sum(b)
    return bytes(b)


def test_header_checksum_error(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match=r"checksum|invalid tar header"):
        apply_bytes(entry(header(b"a", size=1, checksum="bad"), b"x") + END, tmp_path / "d")


def test_header_checksum_garbage_field(tmp_path: Path) -> None:
    blk = bytearray(header(b"a", size=1))
    blk[148:156] = b"zz\x00     "
    with pytest.raises(LayerError):
        apply_bytes(entry(bytes(blk), b"x") + END, tmp_path / "d")


def test_header_corrupted_byte_is_caught(tmp_path: Path) -> None:
    blk = bytearray(header(b"name", size=1))
    blk[2] ^= 0x01  # a bit flip in the name
    with pytest.raises(LayerError):
        apply_bytes(entry(bytes(blk), b"x") + END, tmp_path / "d")


def test_signed_checksum_is_accepted_like_go(tmp_path: Path) -> None:
    name = b"signed-\xc3\xa9\xff"
    r, _ = apply_bytes(entry(header(name, size=2, checksum="signed"), b"ok") + END, tmp_path / "d")
    assert (tmp_path / "d" / os.fsdecode(name)).read_bytes() == b"ok"
    assert r.entries == 1


def test_zero_block_followed_by_data(tmp_path: Path) -> None:
    with pytest.raises(LayerError):
        apply_bytes(F(b"a") + bytes(512) + F(b"b") + END, tmp_path / "d")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(header(b"a", size=1000) + b"y" * 600, id="file-data"),
        pytest.param(F(b"a") + header(b"b", size=1)[:300], id="header"),
        pytest.param(pax_entry([(b"path", b"long-name")])[: 512 + 10], id="pax-data"),
        pytest.param(gnu_long(b"L", b"z" * 600)[: 512 + 100], id="gnu-long-name"),
        pytest.param(F(b"a") + bytes(512) + bytes(100), id="end-marker"),
        pytest.param(
            pax_entry(
                [(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"), (b"GNU.sparse.realsize", b"9")]
            )
            + header(b"s", size=1024)
            + b"1\n",
            id="sparse-map",
        ),
    ],
)
def test_truncated_stream(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(LayerError, match=r"(?i)unexpected end|truncated"):
        apply_bytes(data, tmp_path / "d")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(F(b"a", b"abc"), id="eof-at-header-boundary"),
        pytest.param(F(b"a", b"abc") + bytes(512), id="one-zero-block"),
        pytest.param(header(b"a", size=3) + b"abc" + bytes(100), id="eof-inside-final-padding"),
    ],
)
def test_lenient_endings_like_go(tmp_path: Path, data: bytes) -> None:
    r, js = apply_bytes(data, tmp_path / "d")
    assert (tmp_path / "d" / "a").read_bytes() == b"abc"
    assert r.tar_bytes == len(data)
    assert r.diff_id == "sha256:" + __import__("hashlib").sha256(data).hexdigest()
    assert js[-1] == {"type": 2, "payload": "", "position": len(js) - 1}


HUGE = [
    pytest.param(header(b"a", size=8**11 - 1), id="octal-max-size"),
    pytest.param(header(b"a", size_field=ac._num(1 << 62, 12, b256=True)), id="base256-2^62"),
    pytest.param(pax_entry([(b"size", b"%d" % (1 << 50))]) + header(b"a", size=1), id="pax-size-2^50"),
    pytest.param(header(b"PaxHeader", typeflag=b"x", size=1 << 40), id="pax-header-2^40"),
    pytest.param(header(b"././@LongLink", typeflag=b"L", size=1 << 40, fmt="gnu"), id="gnu-longname-2^40"),
    pytest.param(
        pax_entry([(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"), (b"GNU.sparse.realsize", b"10")])
        + header(b"s", size=1 << 40)
        + b"999999999999\n".ljust(512, b"\x00"),
        id="sparse-1.0-entry-count",
    ),
    pytest.param(header(b"a", size_field=ac._num(-1, 12)), id="negative-size"),
]


@pytest.mark.parametrize("data", HUGE)
def test_huge_sizes_fail_fast_without_allocating(tmp_path: Path, data: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(LayerError):
            apply_bytes(data + bytes(4096), tmp_path / "d")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak allocation {peak} bytes"
    # nothing was written for the claimed payload (the stream holds 4 KiB after the header)
    big = [p for p in (tmp_path / "d").rglob("*") if p.is_file() and p.stat().st_size > len(data) + 4096]
    assert not big, big


def test_huge_size_on_header_only_type_is_ignored(tmp_path: Path) -> None:
    data = (
        entry(header(b"sl", typeflag=b"2", linkname=b"t", size_field=ac._num(1 << 62, 12, b256=True)))
        + F(b"next")
        + END
    )
    r, js = apply_bytes(data, tmp_path / "d")
    assert os.readlink(tmp_path / "d" / "sl") == "t"
    assert (tmp_path / "d" / "next").read_bytes() == b"x"
    assert r.size == 2 == ac.docker_directory_size(tmp_path / "d")
    # tar-split keeps the header's size and the CRC of the (empty) content
    line = next(x for x in js if x.get("name") == "sl")
    assert line["size"] == 1 << 62 and line["payload"] == base64.b64encode(bytes(8)).decode()


def test_sparse_map_referencing_missing_data(tmp_path: Path) -> None:
    """Go: errMissData ("sparse file references non-existent data")."""
    data = pax_entry(
        [
            (b"GNU.sparse.major", b"0"),
            (b"GNU.sparse.minor", b"1"),
            (b"GNU.sparse.size", b"2048"),
            (b"GNU.sparse.numblocks", b"1"),
            (b"GNU.sparse.map", b"0,1024"),
        ]
    )
    data += entry(header(b"sp", size=512), b"A" * 512) + F(b"next", b"nxt") + END
    with pytest.raises(LayerError):
        apply_bytes(data, tmp_path / "d")


def test_star_header_with_invalid_ctime_is_refused_like_go(tmp_path: Path) -> None:
    """Go's readHeader parses a STAR header's atime AND ctime with the header parser, so a
    non-octal ctime is ErrHeader (tar-split disasm: "archive/tar: invalid tar header")."""
    data = entry(header(b"f", fmt="star", size=1, star_ctime=b"zzzzzzzzzzz\x00"), b"x") + END
    with pytest.raises(LayerError):
        apply_bytes(data, tmp_path / "d")


@needs_root  # implied parent directories are created root-owned, as Docker does
def test_star_header_prefix_and_atime(tmp_path: Path) -> None:
    data = (
        entry(
            header(b"f", fmt="star", prefix=b"pre", size=1, mtime=1_600_000_000, star_atime=1_600_000_500),
            b"x",
        )
        + END
    )
    apply_bytes(data, tmp_path / "d")
    st = lst(tmp_path / "d" / "pre" / "f")
    assert st.st_atime_ns == 1_600_000_500 * 10**9 and st.st_mtime_ns == 1_600_000_000 * 10**9


# ================================================================================ whiteouts
@needs_root
def test_whiteout_conversions(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    data = (
        D(b"d/")
        + F(b"d/.wh..wh..opq", b"")
        + F(b"d/keep", b"keep")
        + entry(header(b".wh.gone", uid=1234, gid=5678, mode=0o644))
        + entry(header(b"e/.wh.sub", uid=1, gid=2))
        + entry(header(b".wh..wh..opq"))
        + END
    )
    r, js = apply_bytes(data, dest)
    gone = lst(dest / "gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert (gone.st_uid, gone.st_gid) == (1234, 5678)
    assert stat.S_IMODE(gone.st_mode) == 0  # mknod(S_IFCHR, 0): no permission bits
    sub = lst(dest / "e" / "sub")
    assert stat.S_ISCHR(sub.st_mode) and sub.st_rdev == 0 and (sub.st_uid, sub.st_gid) == (1, 2)
    e = lst(dest / "e")
    assert stat.S_ISDIR(e.st_mode) and stat.S_IMODE(e.st_mode) == 0o755 and (e.st_uid, e.st_gid) == (0, 0)
    assert os.getxattr(dest / "d", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(dest, "trusted.overlay.opaque") == b"y"
    assert "trusted.overlay.opaque" not in os.listxattr(dest / "e")
    assert not [p for p in ac.snapshot(dest) if b".wh." in p]
    assert (dest / "d" / "keep").read_bytes() == b"keep"
    assert r.size == 4 == ac.docker_directory_size(dest)
    names = [x.get("name") for x in js if x["type"] == 1]
    assert names == ["d/", "d/.wh..wh..opq", "d/keep", ".wh.gone", "e/.wh.sub", ".wh..wh..opq"]


@needs_root
def test_hard_link_to_a_whiteout_device_is_allowed(tmp_path: Path) -> None:
    r, _ = apply_bytes(entry(header(b".wh.x")) + HL(b"l", b"x", mode=0o600) + END, tmp_path / "d")
    assert lst(tmp_path / "d" / "l").st_ino == lst(tmp_path / "d" / "x").st_ino
    assert stat.S_IMODE(lst(tmp_path / "d" / "x").st_mode) == 0o600  # the link's chmod applies
    assert r.size == 0


# ================================================================================ docker semantics
@needs_root
def test_dir_entry_after_implicit_creation_merges_metadata(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    data = (
        F(b"a/b/f", b"data")
        + pax_entry([(b"SCHILY.xattr.user.k", b"v"), (b"mtime", b"1234567890.5")])
        + D(b"a/", mode=0o2700, uid=42, gid=43)
        + END
    )
    apply_bytes(data, dest)
    a = lst(dest / "a")
    assert stat.S_IMODE(a.st_mode) == 0o2700 and (a.st_uid, a.st_gid) == (42, 43)
    assert a.st_mtime_ns == 1_234_567_890_500_000_000
    assert os.getxattr(dest / "a", "user.k") == b"v"
    assert (dest / "a" / "b" / "f").read_bytes() == b"data"
    b = lst(dest / "a" / "b")  # still the implied directory: 0755 root:root
    assert stat.S_IMODE(b.st_mode) == 0o755 and (b.st_uid, b.st_gid) == (0, 0)


@needs_root  # implied parent directories are created root-owned, as Docker does
@pytest.mark.parametrize(
    "replacement,check",
    [
        (F(b"x", b"new"), lambda p: p.read_bytes() == b"new"),
        (SL(b"x", b"target"), lambda p: os.readlink(p) == "target"),
        (entry(header(b"x", typeflag=b"6")), lambda p: stat.S_ISFIFO(lst(p).st_mode)),
    ],
    ids=["file", "symlink", "fifo"],
)
def test_entry_replacing_an_implicit_dir_removes_it(
    tmp_path: Path, replacement: bytes, check: object
) -> None:
    dest = tmp_path / "d"
    r, _ = apply_bytes(F(b"x/y/z", b"0123456789") + F(b"x/w", b"w") + replacement + END, dest)
    assert check(dest / "x")  # type: ignore[operator]
    assert sorted(os.listdir(dest)) == ["x"]
    assert r.size == ac.docker_directory_size(dest)


@needs_root  # implied parent directories are created root-owned, as Docker does
def test_replacing_an_implicit_dir_keeps_hard_links_elsewhere(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    data = F(b"d/f", b"0123456789") + HL(b"h", b"d/f") + F(b"d", b"abc") + END
    r, _ = apply_bytes(data, dest)
    assert (dest / "h").read_bytes() == b"0123456789" and (dest / "d").read_bytes() == b"abc"
    assert r.size == 13 == ac.docker_directory_size(dest)


def test_explicit_dir_inside_a_replaced_implicit_dir_fails_like_docker(tmp_path: Path) -> None:
    """Unpack queues "a/x" for its final Chtimes; the entry "a" then RemoveAll()s the implied
    directory "a" (and "a/x" with it) and writes a file there; the final
    system.Chtimes("a/x") fails with ENOTDIR and Docker refuses the layer."""
    with pytest.raises(LayerError):
        apply_bytes(D(b"a/x/") + F(b"a", b"f") + END, tmp_path / "d")


@needs_root
def test_docker_size_rule(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    data = (
        F(b"f", b"x" * 100)
        + HL(b"h1", b"f")
        + HL(b"dir/h2", b"f")
        + SL(b"s", b"abcdefg")
        + HL(b"hs", b"s")  # a hard link to the symlink: one inode, counted once
        + entry(header(b".wh.gone"))
        + entry(header(b"p", typeflag=b"6"))
        + entry(header(b"c", typeflag=b"3", devmajor=1, devminor=3))
        + F(b"empty", b"")
        + D(b"dir/sub/")
        + END
    )
    r, _ = apply_bytes(data, dest)
    assert r.size == 107
    assert r.size == ac.docker_directory_size(dest)


@needs_root
def test_hard_link_entry_metadata_applies_to_the_inode(tmp_path: Path) -> None:
    """createTarFile lchowns/chmods/chtimes the new link path: the inode gets the link's header."""
    dest = tmp_path / "d"
    data = (
        F(b"f", b"data", mode=0o644, uid=1, gid=1, mtime=1_000_000_000)
        + HL(b"l", b"f", mode=0o600, uid=2, gid=3, mtime=1_100_000_000)
        + SL(b"s", b"f", uid=4, gid=4, mtime=1_200_000_000)
        + HL(b"ls", b"s", mode=0o600, uid=5, gid=6, mtime=1_300_000_000)
        + END
    )
    apply_bytes(data, dest)
    f = lst(dest / "f")
    assert (stat.S_IMODE(f.st_mode), f.st_uid, f.st_gid, f.st_mtime_ns) == (
        0o600,
        2,
        3,
        1_100_000_000 * 10**9,
    )
    s = lst(dest / "s")  # hard link to a symlink: lchown only, no chmod, no chtimes
    assert stat.S_ISLNK(s.st_mode) and (s.st_uid, s.st_gid) == (5, 6)
    assert s.st_mtime_ns == 1_200_000_000 * 10**9 and s.st_ino == lst(dest / "ls").st_ino


@needs_root  # implied parent directories are created root-owned, as Docker does
def test_times_follow_dockers_rules(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    data = (
        F(b"noatime", mtime=1_500_000_000)
        + pax_entry([(b"atime", b"1400000000"), (b"mtime", b"1500000000.25")])
        + F(b"atime-before")
        + pax_entry([(b"atime", b"1600000000.75")])
        + F(b"atime-after", mtime=1_500_000_000)
        + F(b"neg", mtime=-1000)
        + pax_entry([(b"mtime", b"16725225600")])
        + F(b"y2500")
        + pax_entry([(b"mtime", b"-1000.5")])
        + SL(b"symneg", b"x")
        + D(b"dir/", mtime=1_300_000_000)
        + F(b"dir/later", mtime=1_700_000_000)  # created inside after the dir entry
        + END
    )
    apply_bytes(data, dest)

    def am(p: str) -> tuple[int, int]:
        s = lst(dest / p)
        return s.st_atime_ns, s.st_mtime_ns

    e9 = 10**9
    assert am("noatime") == (1_500_000_000 * e9, 1_500_000_000 * e9)
    assert am("atime-before") == (1_500_000_000_250_000_000, 1_500_000_000_250_000_000)
    assert am("atime-after") == (1_600_000_000_750_000_000, 1_500_000_000 * e9)
    assert am("neg") == (0, 0)
    assert am("y2500") == (0, 0)
    assert am("symneg")[1] == -1_000_500_000_000  # symlinks are not clamped
    assert am("dir") == (0, 1_300_000_000 * e9)  # no atime in the header: Go's zero time -> epoch


@needs_root
def test_device_numbers_use_dockers_mkdev(tmp_path: Path) -> None:
    def go_mkdev(major: int, minor: int) -> int:  # uint32(unix.Mkdev(uint32(major), uint32(minor)))
        major &= 0xFFFFFFFF
        minor &= 0xFFFFFFFF
        dev = (
            (major & 0x00000FFF) << 8
            | (major & 0xFFFFF000) << 32
            | (minor & 0xFF)
            | (minor & 0xFFFFFF00) << 12
        )
        return dev & 0xFFFFFFFF

    pairs = [(1, 3), (259, 65541), (4095, 1048575), (4096 + 5, (1 << 20) + 7), (8, 300)]
    data = (
        b"".join(
            entry(header(b"c%d" % i, typeflag=b"3", devmajor=ma, devminor=mi))
            for i, (ma, mi) in enumerate(pairs)
        )
        + END
    )
    apply_bytes(data, tmp_path / "d")
    for i, (ma, mi) in enumerate(pairs):
        assert lst(tmp_path / "d" / f"c{i}").st_rdev == go_mkdev(ma, mi), (ma, mi)


@needs_root
@pytest.mark.parametrize("uid", [-5, (1 << 32) + 7, 1 << 40])
def test_out_of_range_owner_ids_do_not_crash(tmp_path: Path, uid: int) -> None:
    """A PAX uid/gid outside uint32 (or a base-256 one) must give Docker's result -- os.Lchown
    passes the int to the syscall, which keeps its low 32 bits -- or a clean LayerError; never
    an unexpected exception."""
    data = pax_entry([(b"uid", b"%d" % uid), (b"gid", b"%d" % uid)]) + F(b"f") + END
    try:
        apply_bytes(data, tmp_path / "d")
    except LayerError:
        return
    st = lst(tmp_path / "d" / "f")
    assert (st.st_uid, st.st_gid) == (uid & 0xFFFFFFFF, uid & 0xFFFFFFFF)


@needs_root
def test_implied_dirs_inherit_setgid_whatever_the_umask(tmp_path: Path) -> None:
    """dockerd runs with umask 022 and MkdirAllAndChownNew(parent, 0755) never chmods, so an
    implied directory below a setgid directory keeps the inherited S_ISGID (02755). The result
    must not depend on the umask of the process that applies the layer."""
    data = D(b"sg/", mode=0o2775, gid=50) + F(b"sg/implied/f") + END
    results = {}
    for um in (0o022, 0o027):
        old = os.umask(um)
        try:
            apply_bytes(data, tmp_path / f"d{um:o}")
        finally:
            os.umask(old)
        results[um] = stat.S_IMODE(lst(tmp_path / f"d{um:o}" / "sg" / "implied").st_mode)
    assert results == {0o022: 0o2755, 0o027: 0o2755}


@needs_root
def test_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    data = (
        D(b"d/", mode=0o777)
        + F(b"d/f", mode=0o666)
        + entry(header(b"p", typeflag=b"6", mode=0o666))
        + F(b"x", mode=0o4777)
        + D(b"t/", mode=0o1777)
        + END
    )
    old = os.umask(0o077)
    try:
        apply_bytes(data, tmp_path / "d")
    finally:
        os.umask(old)
    modes = {p: stat.S_IMODE(lst(tmp_path / "d" / p).st_mode) for p in ("d", "d/f", "p", "x", "t")}
    assert modes == {"d": 0o777, "d/f": 0o666, "p": 0o666, "x": 0o4777, "t": 0o1777}


@needs_root
def test_xattrs_the_filesystem_refuses_are_ignored_like_docker(tmp_path: Path) -> None:
    """createTarFile ignores ENOTSUP and EPERM from lsetxattr (user.* on a symlink or a fifo is
    EPERM; an unknown namespace is ENOTSUP) and fails on anything else."""
    data = (
        pax_entry([(b"SCHILY.xattr.user.x", b"1")])
        + SL(b"s", b"t")
        + pax_entry([(b"SCHILY.xattr.user.x", b"1")])
        + entry(header(b"p", typeflag=b"6"))
        + pax_entry([(b"SCHILY.xattr.bogus.x", b"1"), (b"SCHILY.xattr.user.kept", b"k")])
        + F(b"f")
        + pax_entry([(b"SCHILY.xattr.trusted.t", b"on-a-symlink")])
        + SL(b"s2", b"t")
        + END
    )
    r, _ = apply_bytes(data, tmp_path / "d")
    assert r.ignored_xattrs == 3
    d = tmp_path / "d"
    assert os.listxattr(d / "s", follow_symlinks=False) == [] and os.listxattr(d / "p") == []
    assert os.listxattr(d / "f") == ["user.kept"]
    assert os.getxattr(d / "s2", "trusted.t", follow_symlinks=False) == b"on-a-symlink"


@needs_root
def test_invalid_capability_xattr_is_a_layer_error(tmp_path: Path) -> None:
    with pytest.raises(LayerError):  # EINVAL is not ignored by Docker either
        apply_bytes(
            pax_entry([(b"SCHILY.xattr.security.capability", b"junk")]) + F(b"f") + END, tmp_path / "d"
        )


@needs_root
def test_oversized_xattr_value_is_not_reported_as_a_full_disk(tmp_path: Path) -> None:
    """ext4 answers setxattr of a 10 KB value with ENOSPC. Docker fails the layer too, but that
    is the input's fault: a LayerError, not NoSpace ("no space left on device"). (Where the
    filesystem takes such values, the xattr must simply be there.)"""
    data = pax_entry([(b"SCHILY.xattr.user.big", b"v" * 10000)]) + F(b"f") + END
    try:
        apply_bytes(data, tmp_path / "d")
    except LayerError:
        return
    assert os.getxattr(tmp_path / "d" / "f", "user.big") == b"v" * 10000


def test_global_header_is_ignored_without_creating_parents(tmp_path: Path) -> None:
    """Docker >= 20.10.5 skips 'g' entries before it creates parent directories (ba7906a)."""
    data = pax_entry([(b"comment", b"x")], typeflag=b"g", name=b"/tmp/GlobalHead.0.1") + F(b"a") + END
    r, js = apply_bytes(data, tmp_path / "d")
    assert os.listdir(tmp_path / "d") == ["a"]
    assert [x.get("name") for x in js if x["type"] == 1] == ["/tmp/GlobalHead.0.1", "a"]
    assert r.entries == 2


# ================================================================================ tar-split lines
@needs_root  # implied parent directories are created root-owned, as Docker does
def test_tarsplit_lines_and_assemble(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    sparse_data = b"abc" + b"xyz"
    data = (
        F(b"a", b"hello")
        + F(b"lat-\xe9", b"")
        + F("<&>\u2028".encode(), b"q")
        + pax_entry(
            [
                (b"GNU.sparse.major", b"0"),
                (b"GNU.sparse.minor", b"1"),
                (b"GNU.sparse.size", b"70000"),
                (b"GNU.sparse.numblocks", b"2"),
                (b"GNU.sparse.map", b"10,3,69997,3"),
            ]
        )
        + F(b"GNUSparseFile.1/sp", sparse_data)
        + END
    )
    _, js = apply_bytes(data, dest)
    files = [x for x in js if x["type"] == 1]
    assert files[0] == {
        "type": 1,
        "name": "a",
        "size": 5,
        "payload": base64.b64encode(crc64_iso(b"hello")).decode(),
        "position": files[0]["position"],
    }
    assert files[1] == {
        "type": 1,
        "name_raw": base64.b64encode(b"lat-\xe9").decode(),
        "payload": None,
        "position": files[1]["position"],
    }
    logical = bytes(10) + b"abc" + bytes(69997 - 13) + b"xyz"
    assert files[3]["size"] == 70000 and files[3]["payload"] == base64.b64encode(crc64_iso(logical)).decode()
    assert (dest / "GNUSparseFile.1" / "sp").read_bytes() == logical
    assert [x["position"] for x in js] == list(range(len(js)))
    raw = io.BytesIO()
    for x in js:
        raw.write(json.dumps(x).encode() + b"\n")
    out = io.BytesIO()
    assemble(io.BytesIO(raw.getvalue()), str(dest), out.write)
    expected = data.replace(sparse_data + bytes(512 - 6), logical + bytes(512 - 6))
    assert out.getvalue() == expected
    # the raw JSON escapes <, &, > and U+2028 as Go does
    (tmp_path / "d2").mkdir()
    line = io.BytesIO()
    apply_layer(io.BytesIO(data).read, str(tmp_path / "d2"), line.write)
    assert b'"name":"\\u003c\\u0026\\u003e\\u2028"' in line.getvalue()


def test_assemble_detects_a_changed_file(tmp_path: Path) -> None:
    dest = tmp_path / "d"
    out = io.BytesIO()
    dest.mkdir()
    apply_layer(io.BytesIO(F(b"a", b"hello") + END).read, str(dest), out.write)
    (dest / "a").write_bytes(b"HELLO")
    with pytest.raises(LayerError, match="checksum"):
        assemble(io.BytesIO(out.getvalue()), str(dest), lambda b: None)


# ================================================================================ mutations
def test_mutated_archives_only_ever_raise_layer_error(tmp_path: Path) -> None:
    """Deterministic header mutations of corpus tars: apply_layer either succeeds or raises
    LayerError (errors.py: anything else is a bug)."""
    work = tmp_path / "corpus"
    work.mkdir()
    seeds = [
        ac.build(n, work).read_bytes() for n in ("py-gnu", "py-pax", "raw-misc", "raw-star-and-gnu-atime")
    ]
    rng = random.Random(20240607)
    crashes: dict[str, int] = {}
    for i in range(300):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            blk = rng.randrange(len(data) // 512) * 512
            off = blk + rng.choice([rng.randrange(512), 100 + rng.randrange(48), 156, 257 + rng.randrange(8)])
            data[off] = rng.choice([0, 0x20, 0x30 + rng.randrange(10), 0x80, 0xFF, rng.randrange(256)])
        for b in range(0, len(data) - 511, 512):  # keep most checksums valid
            if data[b + 257 : b + 262] == b"ustar" and rng.random() < 0.9:
                data[b : b + 512] = _fix_checksum(bytes(data[b : b + 512]))
        dest = tmp_path / f"m{i}"
        dest.mkdir()
        try:
            apply_layer(io.BytesIO(bytes(data)).read, str(dest), lambda b: None)
        except LayerError:
            pass
        except Exception as e:  # that is the point
            key = f"{type(e).__name__}: {e}"
            crashes[key] = crashes.get(key, 0) + 1
    assert not crashes, crashes


# ================================================================================ go_clean
GO_CLEAN = [  # Go's path/filepath cleantests
    ("abc", "abc"),
    ("abc/def", "abc/def"),
    ("a/b/c", "a/b/c"),
    (".", "."),
    ("..", ".."),
    ("../..", "../.."),
    ("../../abc", "../../abc"),
    ("/abc", "/abc"),
    ("/", "/"),
    ("", "."),
    ("abc/", "abc"),
    ("abc/def/", "abc/def"),
    ("a/b/c/", "a/b/c"),
    ("./", "."),
    ("../", ".."),
    ("../../", "../.."),
    ("/abc/", "/abc"),
    ("abc//def//ghi", "abc/def/ghi"),
    ("//abc", "/abc"),
    ("///abc", "/abc"),
    ("//abc//", "/abc"),
    ("abc//", "abc"),
    ("abc/./def", "abc/def"),
    ("/./abc/def", "/abc/def"),
    ("abc/.", "abc"),
    ("abc/def/..", "abc"),
    ("abc/def/../..", "."),
    ("/abc/def/../..", "/"),
    ("abc/def/../../..", ".."),
    ("/abc/def/../../..", "/"),
    ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
    ("/../abc", "/abc"),
    ("abc/./../def", "def"),
    ("abc//./../def", "def"),
    ("abc/../../././../def", "../../def"),
]


@pytest.mark.parametrize("path,want", GO_CLEAN)
def test_go_clean(path: str, want: str) -> None:
    assert go_clean(path.encode()) == want.encode()


def test_go_clean_bytes_are_opaque() -> None:
    assert go_clean(b"a/\xff\xfe/../\xe9//") == b"a/\xe9"


@pytest.mark.parametrize(
    "path,want",
    [
        (b"", b""),
        (b".", b""),
        (b"/", b""),
        (b"../../x", b"x"),
        (b"/a/../b", b"b"),
        (b"a/./b/", b"a/b"),
        (b"..", b""),
    ],
)
def test_clean_relative(path: bytes, want: bytes) -> None:
    assert clean_relative(path) == want


# ================================================================================ gojson
@pytest.mark.parametrize(
    "s,want",
    [
        ("plain", '"plain"'),
        ("<>&", '"\\u003c\\u003e\\u0026"'),
        ("\n\r\t", '"\\n\\r\\t"'),
        ("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"'),
        ("\b\f\x0b", '"\\u0008\\u000c\\u000b"'),
        ('"\\', '"\\"\\\\"'),
        ("\u2028\u2029", '"\\u2028\\u2029"'),
        ("\x7f é 日本 \U0001f600", '"\x7f é 日本 \U0001f600"'),
        ("/", '"/"'),
        ("bad\udce9", '"bad\\ufffd"'),
    ],
)
def test_go_string(s: str, want: str) -> None:
    assert go_string(s) == want


@pytest.mark.parametrize(
    "ns,want",
    [
        (0, "1970-01-01T00:00:00Z"),
        (1, "1970-01-01T00:00:00.000000001Z"),
        (1_500_000_000, "1970-01-01T00:00:01.5Z"),
        (100, "1970-01-01T00:00:00.0000001Z"),
        (1_500_000_000_123_000_000, "2017-07-14T02:40:00.123Z"),
        (1_500_000_000_120_000_000, "2017-07-14T02:40:00.12Z"),
        (1_700_000_000_000_000_000, "2023-11-14T22:13:20Z"),
        (-1, "1969-12-31T23:59:59.999999999Z"),
    ],
)
def test_format_rfc3339nano(ns: int, want: str) -> None:
    assert format_rfc3339nano(ns) == want
