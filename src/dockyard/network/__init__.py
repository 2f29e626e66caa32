"""Container networking, below ``containers`` in the stack (it imports neither containers nor engine).

- ``ports``: Docker's ``-p``/``--publish`` grammar (go-connections' ``nat.ParsePortSpec``), the
  ``ExposedPorts``/``PortBindings`` records and ``docker port``'s output;
- ``files``: the container's ``hosts`` and ``resolv.conf`` as libnetwork writes them;
- ``cni``: persistent network namespaces (bind-mounted nsfs files under the exec-root) and the real CNI
  reference plugins (``bridge``, ``host-local``, ``portmap``, ``loopback``) invoked as the CNI spec says.
"""
