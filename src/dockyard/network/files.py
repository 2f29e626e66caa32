"""The container's ``hosts`` and ``resolv.conf``, by libnetwork's rules (etchosts, resolvconf).

hosts: the fixed default block, then ``--add-host`` records (``IP<TAB>NAME``), then the container's own
``IP<TAB>HOSTNAME`` line (the FQDN and its first label when the hostname has a dot), which is the line
the default bridge's hosts file ends with.

resolv.conf: the host's file (systemd-resolved's upstream file when /etc/resolv.conf only names the
127.0.0.53 stub), without localhost nameservers; if none remain, Google's public resolvers (IPv4 only,
as dockerd without IPv6 does).  ``--dns``/``--dns-search``/``--dns-option`` replace the matching parts.
"""
from __future__ import annotations

import re

DEFAULT_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)
DEFAULT_DNS = ["8.8.8.8", "8.8.4.4"]
RESOLVED_STUB = "/run/systemd/resolve/resolv.conf"
_LOCALHOST = re.compile(r"(?m)^\s*nameserver\s*((127\.([0-9]{1,3}\.){2}[0-9]{1,3})|(::1)$)\s*\n*")
_IPV6_NS = re.compile(r"(?m)^\s*nameserver\s*(([0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(%\w+)?)\s*\n*")


def hosts_file(ip: str, hostname: str, domainname: str = "", extra: list[tuple[str, str]] | None = None) -> bytes:
    out = DEFAULT_HOSTS
    for name, addr in extra or []:
        out += f"{addr}\t{name}\n"
    if ip:
        fqdn = f"{hostname}.{domainname}" if domainname else hostname
        names = fqdn if "." not in fqdn else f"{fqdn} {fqdn.split('.', 1)[0]}"
        out += f"{ip}\t{names}\n"
    return out.encode()


def parse_add_host(spec: str) -> tuple[str, str]:
    """``--add-host NAME:IP`` (the CLI's validation: both parts non-empty)."""
    name, sep, addr = spec.partition(":")
    if not sep or not name or not addr:
        from dockyard.errors import InvalidInput

        raise InvalidInput(f'invalid argument "{spec}" for "--add-host" flag: bad format for add-host: "{spec}"')
    return name, addr


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None


def host_resolv_conf(path: str = "/etc/resolv.conf") -> str:
    data = _read(path) or ""
    ns = _nameservers(data)
    if ns == ["127.0.0.53"]:
        data = _read(RESOLVED_STUB) or data
    return data


def _nameservers(data: str) -> list[str]:
    return re.findall(r"(?m)^\s*nameserver\s*([^\s]+)\s*$", data)


def _search(data: str) -> list[str]:
    found = re.findall(r"(?m)^\s*search\s*(.*)$", data)
    return found[-1].split() if found else []


def _options(data: str) -> list[str]:
    found = re.findall(r"(?m)^\s*options\s*(.*)$", data)
    return found[-1].split() if found else []


def resolv_conf(
    host_network: bool,
    dns: list[str] | None = None,
    search: list[str] | None = None,
    options: list[str] | None = None,
    host_data: str | None = None,
) -> bytes:
    data = host_resolv_conf() if host_data is None else host_data
    if not (dns or search or options):
        if host_network:
            return data.encode()
        filtered = _IPV6_NS.sub("", _LOCALHOST.sub("", data))
        if not _nameservers(filtered):
            filtered += "".join(f"\nnameserver {d}" for d in DEFAULT_DNS)  # libnetwork adds no final newline
        return filtered.encode()
    ns = dns or [n for n in _nameservers(data) if host_network or not _LOCALHOST.match(f"nameserver {n}\n")]
    if not ns and not host_network:
        ns = list(DEFAULT_DNS)
    srch = search if search else _search(data)
    if srch == ["."]:
        srch = []
    opts = options if options else _options(data)
    out = ""
    if srch:
        out += "search " + " ".join(srch) + "\n"
    out += "".join(f"nameserver {n}\n" for n in ns)
    if opts:
        out += "options " + " ".join(opts) + "\n"
    return out.encode()
