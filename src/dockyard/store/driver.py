"""What the store needs of a graph driver: the interface, not the driver.

The store owns layer *records* (layerdb) and calls its driver to create and remove the layer
*directories*; the overlay2 driver (:mod:`dockyard.drivers.overlay2`, a floor above) implements
this and is handed in by whoever opens the store (:func:`dockyard.engine.stores.open_store`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dockyard.store import Store
    from dockyard.store.layout import Layout


class LayerDriver(Protocol):
    name: str

    def ensure_home(self) -> None: ...
    def exists(self, cache_id: str) -> bool: ...
    def dir(self, cache_id: str) -> str: ...
    def diff_path(self, cache_id: str) -> str: ...
    def link_of(self, cache_id: str) -> str: ...
    def lower_of(self, cache_id: str) -> str | None: ...
    def create(self, cache_id: str, parent: str | None) -> None: ...
    def remove(self, cache_id: str) -> None: ...
    def mount_options(self, cache_id: str, *, relative: bool = False) -> str: ...
    def mounted(self, cache_id: str) -> bool: ...
    def get(self, cache_id: str) -> str: ...
    def put(self, cache_id: str) -> None: ...


DriverFactory = Callable[["Layout"], LayerDriver]
"""Makes the driver for a store's layout (``Overlay2Driver`` is one)."""

ContainerRecovery = Callable[["Store", str], object]
"""Releases the layers of a container whose record a dead process left half made or half
removed (called under the write lock, before its record dir goes)."""
