"""Dataset registry: name -> where it comes from, how it is laid out, its natural direction."""

from __future__ import annotations

from dataclasses import dataclass

PIX2PIX_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{}.tar.gz"
PIX2PIX_NOTE = "packaged by the pix2pix authors (Isola et al. 2017); cite them and the original dataset"


@dataclass(frozen=True)
class Source:
    name: str
    layout: str  # how prepare finds and tiles its pairs (tiles.FINDERS): labels, ab, cityscapes, ade20k, folder
    direction: str  # the usual task: AtoB means tile left half (A) -> right half (B)
    task: str
    urls: tuple[str, ...] = ()
    archives: tuple[str, ...] = ()  # archive file names, in a mirror or the download cache
    mirror_names: tuple[str, ...] = ()  # other folder names the extracted dataset may have
    sha256: str | None = None  # pinned where known; logged either way
    note: str = ""
    palette: str | None = None  # palettes.PALETTES name that colours its class-id label maps


def _pix2pix(name: str, direction: str, task: str) -> Source:
    return Source(name, "ab", direction, task, (PIX2PIX_URL.format(name),), (f"{name}.tar.gz",), note=PIX2PIX_NOTE)


DATASETS: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            name="cars", layout="labels", direction="AtoB", task="colour car mask -> car photo",
            urls=("https://github.com/Shatrugna-Strife/dataset/raw/main/car-segmentation.zip",),
            archives=("car-segmentation.zip",), mirror_names=("car-segmentation",),
            note="INTELEC.AI car segmentation (Kaggle intelecai/car-segmentation); no licence stated, check Kaggle's terms",
            palette="cars",
        ),
        _pix2pix("facades", "BtoA", "label map -> building facade (CMP Facade Database, Tylecek & Sara 2013)"),
        _pix2pix("maps", "AtoB", "aerial photo -> map (Google Maps scrape)"),
        _pix2pix("edges2shoes", "AtoB", "edges -> shoe photo (UT Zappos50K)"),
        _pix2pix("night2day", "AtoB", "night -> day (Transient Attributes, Laffont et al. 2014)"),
        Source(
            name="cityscapes", layout="cityscapes", direction="AtoB", task="street photo -> colour segmentation map",
            archives=("gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"),
            note="its licence forbids redistribution: download gtFine_trainvaltest.zip and "
                 "leftImg8bit_trainvaltest.zip from https://www.cityscapes-dataset.com and set data.mirror "
                 "to their folder (Cordts et al. 2016)",
        ),
        Source(
            name="ade20k-outdoor", layout="ade20k", direction="AtoB", task="colour label map -> outdoor scene photo",
            urls=("http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",),
            archives=("ADEChallengeData2016.zip",), mirror_names=("ADEChallengeData2016",),
            note="MIT Scene Parsing Benchmark / ADE20K (Zhou et al. 2017); research use, see the ADE20K terms",
            palette="ade20k",
        ),
        Source(
            name="synthetic", layout="labels", direction="AtoB", task="colour car mask -> rendered car photo",
            note="procedural cars generated locally (pix2pix/data/synthetic.py); for tests and offline demos",
            palette="cars",
        ),
        Source(
            name="folder", layout="folder", direction="AtoB", task="your own pairs: A -> B",
            note="read by prepare from data.path, in the layout it shows (data.layout); nothing is downloaded",
        ),
    )
}

