"""Errors that reach the user as one clear line.

Every failure that a user can cause (bad input, a busy data-root, a missing image) is a
:class:`DockyardError`. The CLI prints ``Error: <message>`` and exits non-zero; anything else
is a bug and is reported as such.
"""

from __future__ import annotations


class DockyardError(Exception):
    """A failure with a message fit for the user (one line, names the problem)."""

    exit_code = 1


class InvalidInput(DockyardError):
    """The input archive, layout or layer is malformed or hostile."""


class LayerError(InvalidInput):
    """A layer tar stream is malformed, hostile or does not match its digest."""


class NotFound(DockyardError):
    """An image, layer or reference does not exist."""


class Conflict(DockyardError):
    """The operation conflicts with the store's state (docker's 'conflict:' errors)."""


class StoreBusy(DockyardError):
    """Another process (a running dockerd) owns the data-root."""


class StoreCorrupt(DockyardError):
    """The data-root is damaged in a way that stops this operation."""


class NoSpace(DockyardError):
    """The data-root's filesystem is (or would become) full."""
