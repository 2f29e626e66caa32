"""The fd-relative walker, the in-root resolver and the host writer against hostile trees
(issue 17): symlinks are never followed out of the root, a directory swapped for a symlink
mid-walk yields no host file, FIFOs never block, and cp's host writer refuses Docker's
non-directory/directory overwrite and makes device nodes, setuid bits, capabilities and foreign
uids harmless."""

from __future__ import annotations

import ctypes
import io
import os
import stat
import struct
import tarfile
import threading

import pytest

from dockyard.archive import walker
from dockyard.archive.export import write_dir_tar, write_entry_tar
from dockyard.archive.hostwrite import place, sanitize
from dockyard.errors import InvalidInput

SECRET = b"HOSTILE-CANARY-SECRET"
RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: str, b: str) -> None:
    r = _libc.renameat2(-100, a.encode(), -100, b.encode(), RENAME_EXCHANGE)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@pytest.fixture
def trees(tmp_path):
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "file").write_bytes(b"inside")
    os.symlink(str(outside), root / "l")
    return root, outside


def _read_all(root_fd: int) -> list[tuple[bytes, bytes]]:
    out = []
    for e in walker.walk(root_fd):
        data = b""
        if stat.S_ISREG(e.st.st_mode):
            fd = e.open()
            try:
                data = os.read(fd, 1 << 16)
            finally:
                os.close(fd)
        out.append((e.path, data))
    return out


def test_walk_reports_symlinks_and_never_follows(trees):
    root, outside = trees
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        seen = {}
        for e in walker.walk(fd):
            seen[e.path] = (stat.S_IFMT(e.st.st_mode), e.link_target)
    finally:
        os.close(fd)
    assert seen[b"l"] == (stat.S_IFLNK, os.fsencode(outside))
    assert seen[b"d"][0] == stat.S_IFDIR and seen[b"d/file"][0] == stat.S_IFREG
    assert not any(p.startswith(b"l/") for p in seen)


def test_directory_swapped_for_symlink_mid_walk_never_reads_host(trees):
    root, _ = trees
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        data = []
        for e in walker.walk(fd):
            if e.path == b"d":
                # the container swaps d and l after we saw d as a directory
                exchange(str(root / "d"), str(root / "l"))
            if stat.S_ISREG(e.st.st_mode):
                rfd = e.open()
                data.append(os.read(rfd, 100))
                os.close(rfd)
        assert SECRET not in b"".join(data)
        assert b"inside" in data  # the directory we were in was read, through its fd
    finally:
        os.close(fd)


def test_racing_exchange_thread_never_leaks(trees):
    root, _ = trees
    stop = threading.Event()

    def swapper() -> None:
        while not stop.is_set():
            try:
                exchange(str(root / "d"), str(root / "l"))
            except OSError:
                pass

    t = threading.Thread(target=swapper, daemon=True)
    t.start()
    try:
        for _ in range(300):
            buf = io.BytesIO()
            write_dir_tar(str(root), buf.write)
            assert SECRET not in buf.getvalue()
    finally:
        stop.set()
        t.join()


def test_file_swapped_for_fifo_is_not_opened(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    os.mkfifo(root / "p")
    buf = io.BytesIO()
    write_dir_tar(str(root), buf.write)  # must not block
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        (m,) = tf.getmembers()
    assert m.isfifo()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (e,) = list(walker.walk(fd))
        with pytest.raises(OSError):
            e.open()
    finally:
        os.close(fd)


@pytest.mark.parametrize("kernel", [True, False], ids=["openat2", "fallback"])
def test_open_in_root_resolves_symlinks_inside(tmp_path, monkeypatch, kernel):
    if kernel and not walker._have_openat2():
        pytest.skip("kernel without openat2")
    monkeypatch.setattr(walker, "HAVE_OPENAT2", kernel)
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_bytes(b"container passwd")
    os.symlink("/etc", root / "abs")
    os.symlink("../../../../../etc", root / "up")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for p in ("abs/passwd", "up/passwd", "/../../etc/passwd", "etc/../abs/passwd"):
            f = walker.open_in_root(fd, p, os.O_RDONLY)
            try:
                assert os.read(f, 100) == b"container passwd", p
            finally:
                os.close(f)
        pfd, base = walker.open_parent_in_root(fd, "/abs/passwd")
        try:
            assert base == b"passwd"
            assert os.fstat(pfd).st_ino == os.stat(root / "etc").st_ino
        finally:
            os.close(pfd)
    finally:
        os.close(fd)


def test_write_entry_tar_names_the_entry(trees):
    root, _ = trees
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = io.BytesIO()
        write_entry_tar(fd, b"d", buf.write)
    finally:
        os.close(fd)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        assert [m.name for m in tf] == ["d", "d/file"]


# ----------------------------------------------------------------------------- host writer
def _dirfd(p) -> int:
    return os.open(p, os.O_RDONLY | os.O_DIRECTORY)


def test_two_step_merge_attack_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    dest = tmp_path / "dest"
    (dest / "data").mkdir(parents=True)
    os.symlink(str(victim), dest / "data" / "a")  # planted by a first cp
    stage = tmp_path / "stage"
    (stage / "data" / "a").mkdir(parents=True)
    (stage / "data" / "a" / "evil").write_bytes(b"x")
    s, d = _dirfd(stage), _dirfd(dest)
    try:
        with pytest.raises(InvalidInput) as ei:
            place(s, b"data", d, b"data", dst_path=str(dest / "data"), extract_dir=str(dest))
    finally:
        os.close(s)
        os.close(d)
    assert str(ei.value) == f'cannot overwrite non-directory "{dest}/data/a" with directory "{dest}"'
    assert os.listdir(victim) == []


def test_place_replaces_symlink_file_without_following(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"host")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(str(victim), dest / "f")
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "f").write_bytes(b"new")
    s, d = _dirfd(stage), _dirfd(dest)
    try:
        place(s, b"f", d, b"f", dst_path=str(dest / "f"), extract_dir=str(dest))
    finally:
        os.close(s)
        os.close(d)
    assert victim.read_bytes() == b"host"
    assert not os.path.islink(dest / "f") and (dest / "f").read_bytes() == b"new"


def _cap_blob() -> bytes:
    # struct vfs_cap_data, revision 2, effective, CAP_NET_RAW permitted
    return struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, security xattrs)")
@pytest.mark.parametrize("keep_owner", [False, True], ids=["default", "archive"])
def test_sanitize_devices_setuid_caps_uids(tmp_path, keep_owner):
    stage = tmp_path / "stage"
    (stage / "sub").mkdir(parents=True)
    os.mknod(stage / "sub" / "mem", 0o666 | stat.S_IFCHR, os.makedev(1, 1))
    (stage / "sub" / "suid").write_bytes(b"#!/bin/sh\n")
    os.chown(stage / "sub" / "suid", 0, 0)
    os.chmod(stage / "sub" / "suid", 0o4755)
    (stage / "sub" / "cap").write_bytes(b"x")
    os.setxattr(stage / "sub" / "cap", "security.capability", _cap_blob())
    (stage / "sub" / "foreign").write_bytes(b"x")
    os.chown(stage / "sub" / "foreign", 12345, 23456)
    fd = _dirfd(stage)
    try:
        sanitize(fd, keep_owner=keep_owner, uid=1000, gid=1000)
    finally:
        os.close(fd)
    sub = stage / "sub"
    assert not os.path.lexists(sub / "mem")
    assert stat.S_IMODE(os.lstat(sub / "suid").st_mode) == 0o755
    with pytest.raises(OSError):
        os.getxattr(sub / "cap", "security.capability")
    st = os.lstat(sub / "foreign")
    assert (st.st_uid, st.st_gid) == ((12345, 23456) if keep_owner else (1000, 1000))
