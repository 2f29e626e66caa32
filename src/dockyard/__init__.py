"""dockyard: a daemonless, Docker-compatible image and container storage engine.

The library is organised the way data flows:

- :mod:`dockyard.archive` reads and writes layer tar streams (apply into a directory, tar-split,
  whiteouts, compression). It knows nothing of the store.
- :mod:`dockyard.image` models images (configs, manifests, references).
- :mod:`dockyard.sources` open images from docker-save tars, OCI layouts and the store;
  :mod:`dockyard.destinations` write them out; :mod:`dockyard.copy` joins the two.
- :mod:`dockyard.store` keeps Docker's on-disk layout behind a small API, and
  :mod:`dockyard.drivers.overlay2` is the graph driver (the only code that mounts).
"""

__version__ = "0.1.0"
