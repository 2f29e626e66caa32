"""Unit tests for dockyard.network.ports and .files, against go-connections' and libnetwork's rules.

Expected values are what the docker 20.10 CLI / dockerd produce for the same input (from go-connections'
nat tests and libnetwork's resolvconf/etchosts behaviour), not what dockyard produces.
"""
from __future__ import annotations

import pytest

from dockyard.errors import InvalidInput
from dockyard.network import files, ports


@pytest.mark.parametrize("spec,want", [
    ("80", [("80/tcp", "", "")]),
    ("8080:80", [("80/tcp", "", "8080")]),
    ("127.0.0.1:18080:80", [("80/tcp", "127.0.0.1", "18080")]),
    ("127.0.0.1::80", [("80/tcp", "127.0.0.1", "")]),
    ("53:53/udp", [("53/udp", "", "53")]),
    ("[::1]:8080:80", [("80/tcp", "::1", "8080")]),
    ("8000-8001:80-81", [("80/tcp", "", "8000"), ("81/tcp", "", "8001")]),
    ("8000-8010:80", [("80/tcp", "", "8000-8010")]),
    ("80-81/udp", [("80/udp", "", ""), ("81/udp", "", "")]),
    ("1234/SCTP", [("1234/sctp", "", "")]),
])
def test_parse_spec(spec, want) -> None:
    got = [(m.port, m.host_ip, m.host_port) for m in ports.parse_spec(spec)]
    assert got == want


@pytest.mark.parametrize("spec,msg", [
    ("abc", "Invalid containerPort: abc"),
    ("x:80", "Invalid hostPort: x"),
    ("300.1.1.1:80:80", "Invalid ip address: 300.1.1.1"),
    ("80/icmp", "Invalid proto: icmp"),
    ("8000-8002:80-81", "Invalid ranges specified for container and host Ports: 80-81 and 8000-8002"),
    ("70000", "Invalid containerPort: 70000"),
    ("81-80", "Invalid containerPort: 81-80"),
    ("1.2.3.4:80:", "No port specified: 1.2.3.4:80:<empty>"),
])
def test_parse_spec_errors(spec, msg) -> None:
    with pytest.raises(InvalidInput) as e:
        ports.parse_spec(spec)
    assert str(e.value) == msg


def test_bindings_and_exposed() -> None:
    specs = ["127.0.0.1:18080:80", "8443:443", "9000:80"]
    assert ports.port_bindings(specs) == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}, {"HostIp": "", "HostPort": "9000"}],
        "443/tcp": [{"HostIp": "", "HostPort": "8443"}],
    }
    assert ports.exposed_ports(specs, {"53/udp": {}}) == {"53/udp": {}, "80/tcp": {}, "443/tcp": {}}


def test_port_lines_as_docker_prints() -> None:
    p = {"443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8443"}, {"HostIp": "::", "HostPort": "8443"}],
         "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"}], "53/udp": None}
    assert ports.port_lines(p) == ["80/tcp -> 127.0.0.1:18080", "443/tcp -> 0.0.0.0:8443",
                                   "443/tcp -> :::8443"]
    assert ports.port_lines(p, "80") == ["127.0.0.1:18080"]
    assert ports.port_lines(p, "443/tcp") == ["0.0.0.0:8443", ":::8443"]


def test_hosts_ends_with_ip_tab_short_id() -> None:
    # the seed's walkthrough: ...ff02::2\tip6-allrouters\n172.17.0.2\t45f30cb6a063\n
    h = files.hosts_file("172.17.0.2", "45f30cb6a063").decode()
    assert h.endswith("ff02::2\tip6-allrouters\n172.17.0.2\t45f30cb6a063\n")
    assert h.startswith("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    h2 = files.hosts_file("172.17.0.3", "web.example.com", extra=[files.parse_add_host("db:10.0.0.5")]).decode()
    assert h2.endswith("ff02::2\tip6-allrouters\n10.0.0.5\tdb\n172.17.0.3\tweb.example.com web\n")
    with pytest.raises(InvalidInput):
        files.parse_add_host("nocolon")


def test_resolv_conf_rules() -> None:
    host = "# comment\nnameserver 127.0.0.53\nnameserver 10.1.2.3\nnameserver ::1\nsearch corp.example\n" \
           "options edns0\n"
    got = files.resolv_conf(False, host_data=host).decode()
    assert got == "# comment\nnameserver 10.1.2.3\nsearch corp.example\noptions edns0\n"
    only_local = "nameserver 127.0.0.1\n"
    assert files.resolv_conf(False, host_data=only_local).decode() == \
        "\nnameserver 8.8.8.8\nnameserver 8.8.4.4"
    assert files.resolv_conf(True, host_data=only_local).decode() == only_local
    v6 = "nameserver 2001:db8::1\nnameserver 10.0.0.1\n"
    assert files.resolv_conf(False, host_data=v6).decode() == "nameserver 10.0.0.1\n"
    custom = files.resolv_conf(False, dns=["1.1.1.1"], search=["a.example", "b.example"], options=["ndots:2"],
                               host_data=host).decode()
    assert custom == "search a.example b.example\nnameserver 1.1.1.1\noptions ndots:2\n"
    only_search = files.resolv_conf(False, search=["x.example"], host_data=host).decode()
    assert only_search == "search x.example\nnameserver 10.1.2.3\noptions edns0\n"
