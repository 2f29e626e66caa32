"""exec (issue 11, acceptance 4): `dockyard exec` and `docker exec` (a private dockerd 20.10 on its own
data-root) into a container of the same image (fx-edge:1) give the same exit status, stdout and stderr
class for -u, -w, -e/--env-file, -i, -t, -d, a missing and a non-executable command, a failing command,
--privileged, and an exec into a stopped container."""
from __future__ import annotations

import re
import shlex
import time
import types
from typing import Any

import pytest

import containerlib as cl
import peers

pytestmark = [pytest.mark.peers, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Any:
    peers.need_root()
    peers.need("runc")
    base = tmp_path_factory.mktemp("exec-vs-docker")
    d = peers.Dockerd(base / "docker-root")
    d.start()
    try:
        d.docker("load", "-i", str(cl.EDGE_TAR))
        dy = cl.Dy(base / "dy-root", base / "dy-exec")
        (base / "dy-root").mkdir()
        dy.load_edge()
        for args in (("--name", "ex-run", cl.EDGE_REF, "sleep", "600"),
                     ("--name", "ex-wd", "-w", "/app", "-e", "FROMRUN=1", "-u", "nobody", cl.EDGE_REF, "sleep", "600")):
            d.docker("run", "-d", "--network", "none", *args)
            dy("run", "-d", "--network", "none", *args)
        d.docker("create", "--name", "ex-stopped", "--network", "none", cl.EDGE_REF, "true")
        dy("create", "--name", "ex-stopped", "--network", "none", cl.EDGE_REF, "true")
        envfile = base / "env.list"
        envfile.write_text("# comment\nFROMFILE=yes\nFOO=fromfile\n")
        yield types.SimpleNamespace(d=d, dy=dy, base=base, envfile=str(envfile))
        for n in ("ex-run", "ex-wd", "ex-stopped"):
            dy("rm", "-f", n, check=False)
    finally:
        d.cleanup()
        peers.unmount_below(base)


def _both(pair, *args: str, input: str | None = None) -> tuple[Any, Any]:
    dk = pair.d.docker("exec", *args, check=False, input=input)
    dy = pair.dy("exec", *args, check=False, input=input)
    return dk, dy


def _env_lines(out: str) -> list[str]:
    return sorted(x for x in out.splitlines() if not x.startswith("HOSTNAME="))


CASES = {
    "plain": ("ex-run", "sh", "-c", "id; pwd; echo out; echo err >&2"),
    "exit-code": ("ex-run", "sh", "-c", "exit 7"),
    "user-name": ("-u", "nobody", "ex-run", "sh", "-c", "id; echo $HOME"),
    "user-uid-gid": ("-u", "1000:65534", "ex-run", "id"),
    "user-root-over-image-user": ("-u", "0", "ex-wd", "id"),
    "container-user-and-workdir": ("ex-wd", "sh", "-c", "id; pwd"),
    "workdir": ("-w", "/tmp", "ex-run", "pwd"),
    "caps-default": ("ex-run", "grep", "-E", "^(Cap|NoNewPrivs)", "/proc/self/status"),
    "caps-non-root": ("-u", "nobody", "ex-run", "grep", "-E", "^(Cap|NoNewPrivs)", "/proc/self/status"),
    "signal-exit": ("ex-run", "sh", "-c", "kill -9 $$"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_exec_same_as_docker(pair, case: str) -> None:
    dk, dy = _both(pair, *CASES[case])
    assert (dy.returncode, dy.stdout, dy.stderr) == (dk.returncode, dk.stdout, dk.stderr), \
        "docker: %r\ndockyard: %r" % ((dk.returncode, dk.stdout, dk.stderr), (dy.returncode, dy.stdout, dy.stderr))


def test_exec_env_merge_same_as_docker(pair) -> None:
    args = ("-e", "FOO=bar", "-e", "PATH=/bin", "--env-file", pair.envfile, "ex-wd", "env")
    dk, dy = _both(pair, *args)
    assert dk.returncode == dy.returncode == 0, (dk.stderr, dy.stderr)
    assert _env_lines(dy.stdout) == _env_lines(dk.stdout)
    assert "FOO=bar" in dy.stdout and "FROMRUN=1" in dy.stdout and "FROMFILE=yes" in dy.stdout
    dk, dy = _both(pair, "-t", "ex-run", "env")  # TERM only with -t
    assert _env_lines(dy.stdout) == _env_lines(dk.stdout) and "TERM=xterm" in dy.stdout


@pytest.mark.parametrize("args", [("ex-run", "nope-not-here"), ("ex-run", "/etc/passwd"), ("ex-run", "/no/such/file"),
                                  ("-w", "/does/not/exist", "ex-run", "pwd")])
def test_exec_start_failures_same_code_as_docker(pair, args: tuple[str, ...]) -> None:
    dk, dy = _both(pair, *args)
    assert dy.returncode == dk.returncode == 126, (dk.returncode, dk.stdout, dy.stderr)
    # docker prints the daemon's message on stdout; dockyard gives the same message as its one Error: line
    assert dy.stdout == ""
    line = dy.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert line == "Error: " + dk.stdout.strip(), (dk.stdout, line)


def test_exec_keeps_the_containers_seccomp(pair) -> None:
    """runc applies the container's own filter to an exec'd process: the same Seccomp mode as its init."""
    for run in (lambda *a: pair.d.docker(*a, check=False), lambda *a: pair.dy(*a, check=False)):
        p = run("exec", "ex-run", "sh", "-c", "grep ^Seccomp: /proc/self/status; grep ^Seccomp: /proc/1/status")
        lines = p.stdout.splitlines()
        assert p.returncode == 0 and len(lines) == 2 and lines[0] == lines[1], p


def test_exec_interactive_stdin(pair) -> None:
    dk, dy = _both(pair, "-i", "ex-run", "sh", "-c", "cat; echo done", input="line one\nline two\n")
    assert (dy.returncode, dy.stdout) == (dk.returncode, dk.stdout) == (0, "line one\nline two\ndone\n")
    dk, dy = _both(pair, "ex-run", "sh", "-c", "cat; echo done", input="ignored\n")  # no -i: no stdin
    assert (dy.returncode, dy.stdout) == (dk.returncode, dk.stdout) == (0, "done\n")


def test_exec_tty(pair) -> None:
    """-t without -i, output piped: a pty in the container, CRLF line ends, the process's status."""
    dk, dy = _both(pair, "-t", "ex-run", "sh", "-c", "tty; [ -t 0 ] && echo in-tty; echo $TERM; exit 5")
    assert dk.returncode == 5, dk.stderr
    assert (dy.returncode, dy.stdout) == (dk.returncode, dk.stdout)
    assert dy.stdout.startswith("/dev/pts/") and "in-tty" in dy.stdout


def test_exec_tty_interactive_in_tmux(pair) -> None:
    """-it inside a real terminal (tmux): typed input reaches the process, its status comes back."""
    tmux = peers.need("tmux")
    sock = f"dyexec{time.time_ns()}"
    out = pair.base / "tmux-out"
    rc_file = pair.base / "tmux-rc"
    argv = ["env", *(f"{k}={v}" for k, v in cl._env().items()),
            *map(str, pair.dy.cmd("exec", "-it", "ex-run", "sh", "-c", "read x; echo got:$x; exit 3"))]
    peers.run([tmux, "-L", sock, "new-session", "-d", "-x", "80", "-y", "24",
               f"{shlex.join(argv)} > {out}; echo $? > {rc_file}"])
    try:
        # typed before the process reads: the outer pty buffers it, exec forwards it once running
        deadline = time.monotonic() + 60
        peers.run([tmux, "-L", sock, "send-keys", "hello", "Enter"])
        while time.monotonic() < deadline and not (rc_file.exists() and rc_file.read_text().strip()):
            time.sleep(0.2)
        assert rc_file.exists(), "exec -it did not finish in tmux"
        assert rc_file.read_text().strip() == "3"
        assert "got:hello" in out.read_text()
    finally:
        peers.run([tmux, "-L", sock, "kill-server"], check=False)


def test_exec_detach(pair) -> None:
    for tool, run in (("docker", lambda *a: pair.d.docker(*a, check=False)), ("dockyard", lambda *a: pair.dy(*a, check=False))):
        p = run("exec", "-d", "ex-run", "sh", "-c", f"echo lost; sleep 1; echo {tool} > /tmp/detached")
        assert (p.returncode, p.stdout, p.stderr) == (0, "", ""), (tool, p.stdout, p.stderr)
        p = run("exec", "-dt", "ex-run", "sh", "-c", f"echo lost; sleep 1; echo {tool} > /tmp/detached-t")
        assert (p.returncode, p.stdout, p.stderr) == (0, "", ""), (tool, p.stdout, p.stderr)
        deadline = time.monotonic() + 60
        seen = ""
        while time.monotonic() < deadline:
            seen = run("exec", "ex-run", "sh", "-c", "cat /tmp/detached /tmp/detached-t").stdout
            if seen == f"{tool}\n{tool}\n":
                break
            time.sleep(0.2)
        assert seen == f"{tool}\n{tool}\n", (tool, seen)


def test_exec_privileged_same_as_docker(pair) -> None:
    dk, dy = _both(pair, "--privileged", "ex-run", "grep", "^Cap", "/proc/self/status")
    assert dy.returncode == dk.returncode, (dk.stdout, dk.stderr, dy.stderr)
    if dk.returncode == 0:
        assert dy.stdout == dk.stdout
    else:  # a host that lacks a capability: both refuse, with the runtime's message
        assert dy.stderr.strip() == "Error: " + dk.stdout.strip()


def test_exec_into_stopped_container(pair) -> None:
    dk, dy = _both(pair, "ex-stopped", "true")
    assert dk.returncode != 0 and dy.returncode == dk.returncode, (dk.returncode, dk.stderr, dy.stderr)
    cid = pair.dy.cid("ex-stopped")
    assert dy.stderr.strip() == f"Error: Container {cid} is not running", dy.stderr
    assert re.search(r"Container [0-9a-f]{64} is not running", dk.stderr), dk.stderr
    nope = pair.dy("exec", "no-such-ctr", "true", check=False)
    assert nope.returncode != 0 and nope.stderr.strip() == "Error: No such container: no-such-ctr"
