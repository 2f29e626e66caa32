"""Docker's identifiers: digests, diffIDs, chainIDs, cache-ids and overlay2 short links.

- a *digest* is ``sha256:<64 lowercase hex>``;
- a *diffID* is the digest of an uncompressed layer tar; a blob *digest* that of the blob as
  stored (usually gzip);
- a *chainID* folds the diffIDs: ``chain[0] = diff[0]``,
  ``chain[n] = sha256(chain[n-1] + " " + diff[n])`` over the full digest strings;
- a *cache-id* (overlay2 dir name) is 32 random bytes in hex whose first 12 chars are not all
  digits; a *short link* is 26 chars of base32 from 17 random bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re

from dockyard.errors import InvalidInput

SHA256_PREFIX = "sha256:"
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
EMPTY_LAYER_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


def is_hex64(s: str) -> bool:
    return bool(_HEX64.match(s))


def is_digest(s: str) -> bool:
    return bool(_DIGEST.match(s))


def validate_digest(s: object, what: str = "digest") -> str:
    """Return ``s`` if it is a well-formed sha256 digest, else raise InvalidInput.

    Digests are validated before any path is built from them.
    """
    if not isinstance(s, str) or not _DIGEST.match(s):
        if isinstance(s, str) and s.startswith("sha256:"):
            raise InvalidInput(f"{_lead(what)}{s!r}: not sha256 followed by 64 lowercase hex digits")
        raise InvalidInput(f"{_lead(what)}{s!r}: only sha256 digests are supported")
    return s


def _lead(what: str) -> str:
    # "label: layer digest" -> "label: invalid layer digest "
    head, sep, tail = what.rpartition(": ")
    return f"{head}{sep}invalid {tail} "


def hex_of(digest: str) -> str:
    return digest[len(SHA256_PREFIX) :] if digest.startswith(SHA256_PREFIX) else digest


def sha256_digest(data: bytes) -> str:
    return SHA256_PREFIX + hashlib.sha256(data).hexdigest()


def chain_id(parent_chain: str | None, diff_id: str) -> str:
    if parent_chain is None:
        return diff_id
    return SHA256_PREFIX + hashlib.sha256(f"{parent_chain} {diff_id}".encode()).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    parent: str | None = None
    for d in diff_ids:
        parent = chain_id(parent, d)
        out.append(parent)
    return out


def random_id() -> str:
    """A cache-id / mount-id / container ID (``stringid.GenerateRandomID``)."""
    while True:
        h = os.urandom(32).hex()
        # An all-digit 12-char prefix would parse as a number and break hostnames.
        if not h[:12].isdigit():
            return h


def random_link() -> str:
    """An overlay2 short link name (``overlayutils.GenerateID(26)``)."""
    return base64.b32encode(os.urandom(17)).decode()[:26]


def short_id(digest_or_hex: str) -> str:
    return hex_of(digest_or_hex)[:12]


def random_suffix_id() -> str:
    """Random hex used in ``<chain>-<random>-removing`` names."""
    return os.urandom(32).hex()
