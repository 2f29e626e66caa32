"""Where everything lives in a Docker 20.10 overlay2 data-root. The only module that knows.

```
<root>/image/overlay2/                     0700
    repositories.json                      0600  tags and digest references
    imagedb/content/sha256/<image-id>      0600  config bytes, verbatim
    imagedb/metadata/sha256/<image-id>/    0700  parent, lastUpdated (0600)
    layerdb/sha256/<chain-id>/             0700  cache-id diff parent size tar-split.json.gz (0644)
    layerdb/tmp/write-set-*                      staging of a layer being registered
    layerdb/mounts/<container-id>/               mount-id init-id parent
    distribution/diffid-by-digest/sha256/<digest>
    distribution/v2metadata-by-diffid/sha256/<diff-id>
<root>/overlay2/                           0710
    l/<LINK>  -> ../<cache-id>/diff        0700 (dir)
    <cache-id>/{diff,link,lower,work,merged,committed}
<root>/containers/<id>/                    0710
<root>/tmp/                                      spool space (inputs that cannot be read in place)
<root>/volumes/metadata.db                       dockerd holds a flock on it while running
```
"""

from __future__ import annotations

import os

from dockyard.digest import hex_of

DRIVER = "overlay2"


class Layout:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.image_root = os.path.join(self.root, "image", DRIVER)
        self.repositories_json = os.path.join(self.image_root, "repositories.json")
        self.imagedb = os.path.join(self.image_root, "imagedb")
        self.imagedb_content = os.path.join(self.imagedb, "content", "sha256")
        self.imagedb_metadata = os.path.join(self.imagedb, "metadata", "sha256")
        self.layerdb = os.path.join(self.image_root, "layerdb")
        self.layerdb_sha256 = os.path.join(self.layerdb, "sha256")
        self.layerdb_tmp = os.path.join(self.layerdb, "tmp")
        self.layerdb_mounts = os.path.join(self.layerdb, "mounts")
        self.distribution = os.path.join(self.image_root, "distribution")
        self.overlay2 = os.path.join(self.root, DRIVER)
        self.overlay2_links = os.path.join(self.overlay2, "l")
        self.containers = os.path.join(self.root, "containers")
        self.tmp = os.path.join(self.root, "tmp")
        self.lock_file = os.path.join(self.root, ".dockyard.lock")
        self.dockerd_volumes_db = os.path.join(self.root, "volumes", "metadata.db")

    # imagedb
    def image_config(self, image_id: str) -> str:
        return os.path.join(self.imagedb_content, hex_of(image_id))

    def image_metadata_dir(self, image_id: str) -> str:
        return os.path.join(self.imagedb_metadata, hex_of(image_id))

    # layerdb
    def layer_dir(self, chain_id: str) -> str:
        return os.path.join(self.layerdb_sha256, hex_of(chain_id))

    def mount_dir(self, container_id: str) -> str:
        return os.path.join(self.layerdb_mounts, container_id)

    # distribution
    def diffid_by_digest(self, digest: str) -> str:
        return os.path.join(self.distribution, "diffid-by-digest", "sha256", hex_of(digest))

    def v2metadata_by_diffid(self, diff_id: str) -> str:
        return os.path.join(self.distribution, "v2metadata-by-diffid", "sha256", hex_of(diff_id))

    # overlay2
    def driver_dir(self, cache_id: str) -> str:
        return os.path.join(self.overlay2, cache_id)

    def driver_diff(self, cache_id: str) -> str:
        return os.path.join(self.overlay2, cache_id, "diff")

    def link_path(self, link: str) -> str:
        return os.path.join(self.overlay2_links, link)

    # containers
    def container_dir(self, container_id: str) -> str:
        return os.path.join(self.containers, container_id)
