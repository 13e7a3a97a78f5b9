"""Dataset registry: name -> where it comes from, how it is laid out, its natural direction."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    name: str
    layout: str  # "masks": image + class-id mask files; "ab": A|B side-by-side images
    direction: str  # the task's usual direction: AtoB means tile left half -> right half
    task: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    note: str = ""


DATASETS: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="synthetic",
            layout="masks",
            direction="AtoB",
            task="colour car mask -> rendered car photo",
            note="procedural cars generated locally (pix2pix/data/synthetic.py); for tests and offline demos",
        ),
    )
}
