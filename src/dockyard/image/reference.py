"""Image references, parsed and normalised exactly as Docker does (distribution/reference).

``busybox`` is ``docker.io/library/busybox:latest``; the *familiar* form drops ``docker.io/``
and ``library/`` again. ``repositories.json`` keys are familiar names; distribution metadata
uses the fully qualified name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockyard.errors import DockyardError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]*)"
_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$")
_ANCHORED_HEX = re.compile(r"^[a-f0-9]{64}$")
_TAG_RE = re.compile(rf"^{_TAG}$")
NAME_TOTAL_LENGTH_MAX = 255


class InvalidReference(DockyardError):
    pass


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Fully qualified repository name: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        if self.domain == DEFAULT_DOMAIN:
            p = self.path
            if p.startswith(OFFICIAL_PREFIX) and p.count("/") == 1:
                return p[len(OFFICIAL_PREFIX) :]
            return p
        return self.name

    def familiar_string(self) -> str:
        s = self.familiar_name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    def tagged_or_latest(self) -> Reference:
        """Docker's TagNameOnly: a bare name means ``:latest``."""
        if self.tag is None and self.digest is None:
            return Reference(self.domain, self.path, "latest", None)
        return self

    def store_key(self) -> str:
        """The familiar string Docker uses as key in repositories.json (digest wins over tag)."""
        r = self.tagged_or_latest()
        if r.digest:
            return f"{r.familiar_name}@{r.digest}"
        return f"{r.familiar_name}:{r.tag}"


def _split_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    if i == -1 or (not any(c in name[:i] for c in ".:") and name[:i] != "localhost"):
        domain, rest = DEFAULT_DOMAIN, name
    else:
        domain, rest = name[:i], name[i + 1 :]
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = OFFICIAL_PREFIX + rest
    return domain, rest


def parse_reference(s: str) -> Reference:
    """Docker's ParseNormalizedNamed (docker.io and library/ filled in)."""
    if not s:
        raise InvalidReference("invalid reference format")
    if _ANCHORED_HEX.match(s):
        raise InvalidReference(f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings")
    m = _REFERENCE_RE.match(s)
    if not m:
        # Docker checks the lowercase form to give the better message.
        if _REFERENCE_RE.match(s.lower()):
            raise InvalidReference("invalid reference format: repository name must be lowercase")
        raise InvalidReference(f"invalid reference format: {s!r}")
    name, tag, digest = m.group(1), m.group(2), m.group(3)
    domain, rest = _split_domain(name)
    if rest.lower() != rest:
        raise InvalidReference("invalid reference format: repository name must be lowercase")
    if len(domain) + 1 + len(rest) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if digest is not None and not re.match(r"^sha256:[a-f0-9]{64}$", digest):
        raise InvalidReference(f"invalid digest {digest!r} in reference {s!r}")
    return Reference(domain, rest, tag, digest)


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG_RE.match(tag))


def parse_store_key(key: str) -> Reference:
    return parse_reference(key)
