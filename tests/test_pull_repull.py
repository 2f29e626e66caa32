"""Re-pulling an image that is already in the store fetches no blob at all (issue 16, exactness item 1).

`docker pull` resolves the manifest, finds the config digest (= the image ID) in its store and downloads
nothing. dockyard must do the same: the test counts the blob GETs in a real docker-registry's access log.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

import peers
from pulllib import dy, isolated_docker_config, skopeo_copy  # noqa: F401  (autouse fixture)
from registry_servers import DockerRegistry, need

pytestmark = [pytest.mark.peers, pytest.mark.timeout(600)]

BLOB_GET = re.compile(r'"GET /v2/fx/edge/blobs/(sha256:[0-9a-f]{64})')
MANIFEST_GET = re.compile(r'"(?:GET|HEAD) /v2/fx/edge/manifests/')


def _log(reg: Any) -> str:
    return (Path(reg.base) / "registry.log").read_text(errors="replace")


def _wait_for(pred: Any, what: str, reg: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError("%s; registry log tail:\n%s" % (what, reg.log_tail()))


def test_repull_fetches_no_blob(tmp_path: Path) -> None:
    peers.need_root()
    skopeo = need("skopeo")
    need("docker-registry")
    with DockerRegistry(tmp_path / "reg") as reg:
        skopeo_copy(skopeo, "fx-edge.oci-gzip", "1", "%s/fx/edge:1" % reg.addr)
        root = tmp_path / "root"
        p = dy(root, "pull", "%s/fx/edge:1" % reg.addr)
        assert p.returncode == 0, p.stderr
        # the first pull fetched the config and the layers: the log does show blob GETs
        _wait_for(lambda: len(BLOB_GET.findall(_log(reg))) >= 2, "first pull: no blob GET in the access log",
                  reg)
        mark = len(_log(reg))
        p = dy(root, "pull", "%s/fx/edge:1" % reg.addr)
        assert p.returncode == 0, p.stderr
        assert "Image is up to date" in p.stdout, p.stdout
        _wait_for(lambda: MANIFEST_GET.search(_log(reg)[mark:]) is not None,
                  "second pull: no manifest request in the access log", reg)
        # give the access log a moment beyond the manifest line, then count the blob requests
        time.sleep(1)
        again = BLOB_GET.findall(_log(reg)[mark:])
        assert again == [], "the re-pull fetched blobs: %s" % again
