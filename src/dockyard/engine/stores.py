"""Opening a store: the one place that wires the store to its graph driver and to container
recovery, the parts that live on the floors above it."""

from __future__ import annotations

from dockyard.containers.removal import release_container_layers
from dockyard.drivers.overlay2 import Overlay2Driver
from dockyard.store import Store


def open_store(root: str) -> Store:
    """The store at ``root`` with the overlay2 driver; leftovers of dead writers (layers and
    containers) are recovered the first time it takes the write lock."""
    return Store(root, Overlay2Driver, recover_container=release_container_layers)
