"""docker save's reading of names: a tag, a whole repository (all its tags), or an image ID."""

from __future__ import annotations

from dataclasses import dataclass, field

from dockyard.image.reference import InvalidReference, Reference, parse_reference
from dockyard.store import Store


@dataclass
class SelectedImage:
    image_id: str
    refs: list[Reference] = field(default_factory=list)


def select_images(store: Store, names: list[str]) -> list[SelectedImage]:
    """docker save's reading of names: a tag, a repository (all its tags), or an ID."""
    out: dict[str, SelectedImage] = {}

    def add(image_id: str, ref: Reference | None) -> None:
        sel = out.setdefault(image_id, SelectedImage(image_id))
        if ref is not None and ref.tag and ref not in sel.refs:
            sel.refs.append(ref)

    for name in names:
        ref: Reference | None
        try:
            ref = parse_reference(name)
        except InvalidReference:
            ref = None
        if ref is not None and ref.tag is None and ref.digest is None:
            tagged = [(r, i) for r, i in store.refs.all() if r.name == ref.name]
            if tagged:
                for r, i in tagged:
                    add(i, r)
                continue
            add(store.resolve_image(name), None)
            continue
        image_id = store.resolve_image(name)
        if ref is not None and store.refs.get(ref) == image_id:
            add(image_id, ref)
        else:
            add(image_id, None)
    return list(out.values())
