"""A container's records as dockerd 20.10 writes them: ``config.v2.json`` and ``hostconfig.json``.

Both are Go structs encoded with ``json.Encoder`` (struct field order, HTML escaping, a trailing
newline) and replaced atomically on every change. dockerd loads a container at startup only if
its dir name equals ``ID``, ``Driver`` is ``overlay2``, ``layerdb/mounts/<ID>`` loads and the
``Name`` is unique; the fields below are the ones it reads, in its order.
"""

from __future__ import annotations

import json
import os
from typing import Any

from dockyard import gojson
from dockyard.image.container_config import container_config

ZERO_TIME = gojson.ZERO_TIME

MASKED_PATHS = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def new_state() -> dict[str, Any]:
    return {
        "Running": False,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": False,
        "RemovalInProgress": False,
        "Dead": False,
        "Pid": 0,
        "ExitCode": 0,
        "Error": "",
        "StartedAt": ZERO_TIME,
        "FinishedAt": ZERO_TIME,
        "Health": None,
    }


def endpoint_settings() -> dict[str, Any]:
    return {
        "IPAMConfig": None,
        "Links": None,
        "Aliases": None,
        "NetworkID": "",
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": "",
        "DriverOpts": None,
        "IPAMOperational": False,
    }


def network_settings(network: str) -> dict[str, Any]:
    return {
        "Bridge": "",
        "SandboxID": "",
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Networks": {network: endpoint_settings()},
        "Service": None,
        "Ports": None,
        "SandboxKey": "",
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "IsAnonymousEndpoint": False,
        "HasSwarmEndpoint": False,
    }


def mount_point(source: str, destination: str, rw: bool) -> dict[str, Any]:
    """A bind mount as dockerd records it in MountPoints."""
    return {
        "Source": source,
        "Destination": destination,
        "RW": rw,
        "Name": "",
        "Driver": "",
        "Type": "bind",
        "Propagation": "rprivate",
        "Spec": {
            "Type": "bind",
            "Source": source,
            "Target": destination,
            **({} if rw else {"ReadOnly": True}),
        },
        "SkipMountpointCreation": False,
    }


def container_record(
    *,
    container_id: str,
    created: str,
    path: str,
    args: list[str],
    config: dict[str, Any],
    image_id: str,
    name: str,
    network: str,
    log_path: str,
    mount_points: dict[str, Any],
) -> dict[str, Any]:
    return {
        "StreamConfig": {},
        "State": new_state(),
        "ID": container_id,
        "Created": created,
        "Managed": False,
        "Path": path,
        "Args": args,
        "Config": container_config(config),
        "Image": image_id,
        "NetworkSettings": network_settings(network),
        "LogPath": log_path,
        "Name": name,
        "Driver": "overlay2",
        "OS": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "RestartCount": 0,
        "HasBeenStartedBefore": False,
        "HasBeenManuallyStopped": False,
        "MountPoints": gojson.GoMap(mount_points),
        "SecretReferences": None,
        "ConfigReferences": None,
        "AppArmorProfile": "",
        "HostnamePath": "",
        "HostsPath": "",
        "ShmPath": "",
        "ResolvConfPath": "",
        "SeccompProfile": "",
        "NoNewPrivileges": False,
        "LocalLogCacheMeta": {"HaveNotifyEnabled": False},
    }


def host_config(
    *,
    binds: list[str] | None,
    network_mode: str,
    auto_remove: bool,
    read_only: bool,
    privileged: bool = False,
) -> dict[str, Any]:
    return {
        "Binds": binds or None,
        "ContainerIDFile": "",
        "LogConfig": {"Type": "json-file", "Config": {}},
        "NetworkMode": network_mode,
        "PortBindings": {},
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "AutoRemove": auto_remove,
        "VolumeDriver": "",
        "VolumesFrom": None,
        "CapAdd": None,
        "CapDrop": None,
        "CgroupnsMode": "host",
        "Dns": [],
        "DnsOptions": [],
        "DnsSearch": [],
        "ExtraHosts": None,
        "GroupAdd": None,
        "IpcMode": "private",
        "Cgroup": "",
        "Links": None,
        "OomScoreAdj": 0,
        "PidMode": "",
        "Privileged": privileged,
        "PublishAllPorts": False,
        "ReadonlyRootfs": read_only,
        "SecurityOpt": None,
        "UTSMode": "",
        "UsernsMode": "",
        "ShmSize": 67108864,
        "Runtime": "runc",
        "ConsoleSize": [0, 0],
        "Isolation": "",
        "CpuShares": 0,
        "Memory": 0,
        "NanoCpus": 0,
        "CgroupParent": "",
        "BlkioWeight": 0,
        "BlkioWeightDevice": [],
        "BlkioDeviceReadBps": [],
        "BlkioDeviceWriteBps": [],
        "BlkioDeviceReadIOps": [],
        "BlkioDeviceWriteIOps": [],
        "CpuPeriod": 0,
        "CpuQuota": 0,
        "CpuRealtimePeriod": 0,
        "CpuRealtimeRuntime": 0,
        "CpusetCpus": "",
        "CpusetMems": "",
        "Devices": [],
        "DeviceCgroupRules": None,
        "DeviceRequests": None,
        "KernelMemory": 0,
        "KernelMemoryTCP": 0,
        "MemoryReservation": 0,
        "MemorySwap": 0,
        "MemorySwappiness": None,
        "OomKillDisable": False,
        "PidsLimit": None,
        "Ulimits": [],
        "CpuCount": 0,
        "CpuPercent": 0,
        "IOMaximumIOps": 0,
        "IOMaximumBandwidth": 0,
        "MaskedPaths": list(MASKED_PATHS),
        "ReadonlyPaths": list(READONLY_PATHS),
    }


def encode(obj: dict[str, Any]) -> bytes:
    """``json.NewEncoder(w).Encode(v)``: compact, Go escaping, trailing newline."""
    return (gojson.marshal(obj) + "\n").encode()


def load_json(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        obj = json.load(f)
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a JSON object")
    return obj


def config_path(container_dir: str) -> str:
    return os.path.join(container_dir, "config.v2.json")


def hostconfig_path(container_dir: str) -> str:
    return os.path.join(container_dir, "hostconfig.json")
