"""Where and how to reach a registry: host names, TLS, plain-HTTP rules and retry timing.

Rules (dockerd's, with one documented difference):

* ``docker.io`` (also ``index.docker.io``, ``registry-1.docker.io``) is served by
  ``https://registry-1.docker.io``; its credentials key is ``https://index.docker.io/v1/``.
* A *secure* registry is spoken to over https only, verified against the system CAs plus
  the CAs (``*.crt``) of Docker's per-registry directory ``/etc/docker/certs.d/<host[:port]>/``;
  a ``<name>.cert`` + ``<name>.key`` pair there is the client certificate.
* A registry listed in ``insecure_registries`` (``host[:port]``, or a CIDR that the host's
  addresses fall into) is tried over https *without* certificate verification first and over
  plain http when that fails at the TLS/connection level -- as dockerd does.
* A loopback registry (``localhost``, ``127.0.0.0/8``, ``::1``) that is not listed is spoken to
  over plain http directly (dockerd tries https first); if the server turns out to speak TLS it
  is retried over https without verification. When ``certs.d/<host[:port]>/`` exists for it, verified
  https comes first instead.
* ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` are honoured (httpx ``trust_env``).
"""

from __future__ import annotations

import email.utils
import ipaddress
import os
import random
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dockyard.registry.errors import RegistryError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DEFAULT_CERTS_DIR = "/etc/docker/certs.d"

#: statuses that are retried (for idempotent requests)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RegistryHost:
    """A registry as named by the user, and where its API lives.

    ``name`` is the display/reference form (``docker.io``, ``localhost:5000``); ``netloc`` the
    ``host[:port]`` of the API (``registry-1.docker.io``); ``host`` the bare host (no brackets).
    """

    name: str
    netloc: str
    host: str
    port: int | None

    @property
    def is_docker_hub(self) -> bool:
        return self.name == DOCKER_HUB

    @property
    def auth_key(self) -> str:
        """The key of this registry in ``~/.docker/config.json`` ``auths``."""
        return DOCKER_HUB_AUTH_KEY if self.is_docker_hub else self.name

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


def strip_scheme(registry: str) -> str:
    """``https://host:5000/v2/`` -> ``host:5000`` (Docker's ConvertToHostname)."""
    s = registry.strip()
    for prefix in ("http://", "https://"):
        if s.lower().startswith(prefix):
            s = s[len(prefix) :]
            break
    return s.split("/", 1)[0]


def split_host_port(netloc: str) -> tuple[str, int | None]:
    """``[::1]:5000`` -> (``::1``, 5000); ``host`` -> (``host``, None)."""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise RegistryError(f"invalid registry address {netloc!r}")
        host, rest = netloc[1:end], netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise RegistryError(f"invalid registry address {netloc!r}")
        port_s = rest[1:] if rest else ""
    else:
        host, sep, port_s = netloc.rpartition(":")
        if not sep or ":" in host:
            host, port_s = netloc, ""
    if port_s:
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise RegistryError(f"invalid port in registry address {netloc!r}")
        return host, int(port_s)
    return host, None


def parse_registry(registry: str) -> RegistryHost:
    """Parse ``docker.io``, ``localhost:5000``, ``[::1]:5000``, ``https://quay.io/`` ..."""
    netloc = strip_scheme(registry)
    if not netloc:
        raise RegistryError(f"invalid registry address {registry!r}")
    if netloc.lower() in _HUB_ALIASES:
        return RegistryHost(DOCKER_HUB, DOCKER_HUB_API, DOCKER_HUB_API, None)
    host, port = split_host_port(netloc)
    if not host:
        raise RegistryError(f"invalid registry address {registry!r}")
    return RegistryHost(netloc, netloc, host, port)


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for info in infos:
        try:
            out.append(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
        except ValueError:
            continue
    return out


def is_listed_insecure(reg: RegistryHost, insecure_registries: Sequence[str]) -> bool:
    """``reg`` matches an ``insecure_registries`` entry: ``host:port``, ``host`` or a CIDR."""
    cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in insecure_registries:
        e = entry.strip()
        if not e:
            continue
        if "/" in e and "://" not in e:
            try:
                cidrs.append(ipaddress.ip_network(e, strict=False))
                continue
            except ValueError:
                pass
        try:
            other = parse_registry(e)
        except RegistryError:
            continue
        if other.name == reg.name or (other.port is None and other.host.lower() == reg.host.lower()):
            return True
    if cidrs:
        for addr in _host_addresses(reg.host):
            if any(addr in net for net in cidrs):
                return True
    return False


@dataclass(frozen=True)
class Endpoint:
    """One way to reach the API: ``scheme://netloc`` and whether TLS is verified."""

    scheme: str
    netloc: str
    verify: bool

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.netloc}"


def certs_dir_for(reg: RegistryHost, certs_root: str | os.PathLike[str] | None) -> Path | None:
    """Docker's ``certs.d/<host[:port]>`` directory of ``reg`` if it exists."""
    if certs_root is None:
        return None
    root = Path(certs_root)
    names = [reg.name, reg.netloc]
    if reg.is_docker_hub:
        names.append("index.docker.io")
    for n in names:
        d = root / n
        if d.is_dir():
            return d
    return None


def candidate_endpoints(
    reg: RegistryHost, insecure_registries: Sequence[str], certs_root: str | os.PathLike[str] | None
) -> list[Endpoint]:
    """The endpoints to try, in order (see the module docstring)."""
    https_verified = Endpoint("https", reg.netloc, True)
    https_unverified = Endpoint("https", reg.netloc, False)
    plain = Endpoint("http", reg.netloc, False)
    if reg.is_docker_hub:
        return [https_verified]
    if is_listed_insecure(reg, insecure_registries):
        return [https_unverified, plain]
    if reg.is_loopback:
        if certs_dir_for(reg, certs_root) is not None:
            return [https_verified, plain]
        return [plain, https_unverified]
    return [https_verified]


def make_ssl_context(verify: bool, certs_dir: Path | None) -> ssl.SSLContext:
    """System CAs plus ``certs_dir/*.crt``; client cert from ``*.cert`` + ``*.key`` there."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if certs_dir is None:
        return ctx
    try:
        entries = sorted(certs_dir.iterdir())
    except OSError as e:
        raise RegistryError(f"cannot read {certs_dir}: {e.strerror}") from None
    for p in entries:
        if p.suffix == ".crt":
            try:
                if verify:
                    ctx.load_verify_locations(cafile=str(p))
            except (OSError, ssl.SSLError) as e:
                raise RegistryError(f"cannot load CA certificate {p}: {e}") from None
        elif p.suffix == ".cert":
            key = p.with_suffix(".key")
            if not key.exists():
                raise RegistryError(
                    f"missing key {key.name} for client certificate {p}. "
                    "Note that CA certificates should use the extension .crt"
                )
            try:
                ctx.load_cert_chain(certfile=str(p), keyfile=str(key))
            except (OSError, ssl.SSLError) as e:
                raise RegistryError(f"cannot load client certificate {p}: {e}") from None
        elif p.suffix == ".key" and not p.with_suffix(".cert").exists():
            raise RegistryError(f"missing client certificate {p.with_suffix('.cert').name} for key {p}")
    return ctx


# ----------------------------------------------------------------------------------- retry timing
def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    v = value.strip()
    if v.isdigit():
        return float(v)
    try:
        dt = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    return max(0.0, dt.timestamp() - (time.time() if now is None else now))


class Backoff:
    """Exponential backoff with jitter, at most ``retries`` waits inside a bounded total wait.

    Wait *n* (0-based) is ``base * 2**n`` capped at ``cap``, scaled by a random factor in
    [0.5, 1]; a server's ``Retry-After`` replaces it (but never more than ``max(cap * 4, base)``).
    Once ``retries`` waits were taken, or the next one would push the total past ``budget``
    seconds, :meth:`sleep` returns False: give up.
    """

    def __init__(self, retries: int, base: float, cap: float, budget: float) -> None:
        self.retries = retries
        self.base = base
        self.cap = cap
        self.budget = budget
        self.waited = 0.0
        self.attempt = 0

    def next_delay(self, retry_after: float | None = None) -> float | None:
        if self.attempt >= self.retries:
            return None
        if retry_after is not None:
            delay = min(retry_after, max(self.cap * 4, self.base))
        else:
            delay = min(self.base * (2**self.attempt), self.cap) * random.uniform(0.5, 1.0)
        if self.waited + delay > self.budget:
            return None
        self.attempt += 1
        self.waited += delay
        return delay

    def sleep(self, retry_after: float | None = None) -> bool:
        """Sleep for the next delay; False (no sleep) when retries or the time budget are spent."""
        d = self.next_delay(retry_after)
        if d is None:
            return False
        if d > 0:
            time.sleep(d)
        return True
