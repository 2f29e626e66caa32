"""A tiny rootfs built in memory, so the main job works offline on a fresh machine."""

from __future__ import annotations

import io
import tarfile

MTIME = 1700000000

FILES = {
    "etc/os-release": b'NAME="dockyard demo"\nID=dockyard-demo\n',
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": b"root:x:0:\n",
    "hello.txt": b"Hello from a layer that dockyard stored in Docker's own layout.\n",
    "usr/share/dockyard/README": b"This image was made by `dockyard demo`.\n",
}


def demo_rootfs() -> bytes:
    """A GNU-style rootfs tar: dirs, files, a symlink, a hard link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = sorted(
            {"/".join(p.split("/")[:i]) for p in FILES for i in range(1, p.count("/") + 1)} | {"tmp", "root"}
        )
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o1777 if d == "tmp" else (0o700 if d == "root" else 0o755)
            ti.mtime = MTIME
            tf.addfile(ti)
        for name, data in sorted(FILES.items()):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = MTIME
            tf.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("greeting")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "hello.txt"
        ti.mtime = MTIME
        tf.addfile(ti)
        ti = tarfile.TarInfo("usr/share/dockyard/hello.txt")
        ti.type = tarfile.LNKTYPE
        ti.linkname = "hello.txt"
        ti.mtime = MTIME
        ti.mode = 0o644
        tf.addfile(ti)
    return buf.getvalue()
