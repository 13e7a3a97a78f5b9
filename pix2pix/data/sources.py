"""Dataset registry: name -> where it comes from, how it is laid out, its natural direction."""

from __future__ import annotations

from dataclasses import dataclass

PIX2PIX_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{}.tar.gz"
PIX2PIX_NOTE = "packaged by the pix2pix authors (Isola et al. 2017); cite them and the original dataset"


@dataclass(frozen=True)
class Source:
    name: str
    layout: str  # "masks": image + class-id mask files; "ab": A|B side-by-side images
    direction: str  # the usual task: AtoB means tile left half (A) -> right half (B)
    task: str
    urls: tuple[str, ...] = ()
    archive: str = ""  # file name of the archive, in the mirror or the download cache
    mirror_names: tuple[str, ...] = ()  # other folder names the extracted dataset may have
    sha256: str | None = None  # pinned where known; recorded in SOURCE.json either way
    note: str = ""


def _pix2pix(name: str, direction: str, task: str) -> Source:
    return Source(name, "ab", direction, task, (PIX2PIX_URL.format(name),), f"{name}.tar.gz", note=PIX2PIX_NOTE)


DATASETS: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="cars", layout="masks", direction="AtoB", task="colour car mask -> car photo",
            urls=("https://github.com/Shatrugna-Strife/dataset/raw/main/car-segmentation.zip",),
            archive="car-segmentation.zip", mirror_names=("car-segmentation",),
            note="INTELEC.AI car segmentation (Kaggle intelecai/car-segmentation); no licence stated, check Kaggle's terms",
        ),
        _pix2pix("facades", "BtoA", "label map -> building facade (CMP Facade Database, Tylecek & Sara 2013)"),
        _pix2pix("maps", "AtoB", "aerial photo -> map (Google Maps scrape)"),
        _pix2pix("edges2shoes", "AtoB", "edges -> shoe photo (UT Zappos50K)"),
        _pix2pix("night2day", "AtoB", "night -> day (Transient Attributes, Laffont et al. 2014)"),
        Source(
            name="synthetic", layout="masks", direction="AtoB", task="colour car mask -> rendered car photo",
            note="procedural cars generated locally (pix2pix/data/synthetic.py); for tests and offline demos",
        ),
    )
}


def direction_of(cfg) -> str:
    """params `direction`, with `auto` meaning the dataset's usual direction."""
    return DATASETS[cfg.dataset].direction if cfg.direction == "auto" else cfg.direction
