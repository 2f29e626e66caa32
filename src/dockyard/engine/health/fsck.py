"""fsck: check a data-root (dockyard's or Docker's) and repair what can be rebuilt without loss.

Each problem is a :class:`Finding`: a path, a one-line explanation, a severity, and -- when it can
be fixed without losing anything -- a repair action. What cannot be rebuilt (a layer whose files
are gone or changed, a config that does not hash to its ID) is reported with the images it
breaks, and never deleted silently.

Checks, in order of the store's dependency chain:

- ``repositories.json`` -> imagedb: every reference resolves to an image that exists;
- imagedb: names are digests, content hashes to its name, configs parse, their diff_ids give
  chainIDs that exist, ``parent`` metadata points at an image;
- layerdb: ``cache-id``/``diff``/``size``/``parent``/``tar-split.json.gz`` present and valid,
  the chainID recomputes from parent + diff, parents exist; staging leftovers and
  ``*-removing`` dirs;
- overlay2: each layer's dir with ``diff/``, ``link``, ``l/<link>`` pointing back, ``lower``
  matching the parent chain, ``work/``, ``committed`` in parents; orphan dirs, dangling or
  unreferenced ``l/`` links, stale mounts;
- containers: ``layerdb/mounts/<id>`` <-> ``containers/<id>`` <-> ``overlay2/<mount-id>{,-init}``;
- ``--deep``: every layer reassembled through tar-split hashes to its diffID.
"""

from __future__ import annotations

from collections.abc import Callable

from dockyard.engine.health.findings import ERROR, WARNING, CheckerBase, Finding, Report, diff_dir_size
from dockyard.engine.health.repairs import expected_lower, repair, rewrite_all_lowers, store_driver_unmount
from dockyard.engine.health.storechecks import StoreChecks
from dockyard.store import Store


class Checker(StoreChecks):
    """All checks, in the order of the store's dependency chain (see the module docstring)."""

    # ------------------------------------------------------------------ run
    def run(self) -> Report:
        self.check_layerdb()
        self.check_overlay2_layers()
        self.check_containers()
        self.check_images()
        self.check_references()
        self.check_distribution()
        self.recover_layer_files()
        self.check_orphans()
        if self.deep:
            self.check_deep()
        self.collect_damage()
        return self.report


def fsck(
    store: Store, *, deep: bool = False, progress: Callable[[str, int, int | None], None] | None = None
) -> Report:
    return Checker(store, deep=deep, progress=progress).run()


__all__ = [
    "ERROR",
    "WARNING",
    "Checker",
    "CheckerBase",
    "Finding",
    "Report",
    "diff_dir_size",
    "expected_lower",
    "fsck",
    "repair",
    "rewrite_all_lowers",
    "store_driver_unmount",
]
