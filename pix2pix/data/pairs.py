"""Find the (A, B) pairs of a dataset folder, in the layouts people keep paired images in.

- `ab`: side-by-side A|B images, one file a pair (the pix2pix archives, the reference's
  combine_A_and_B.py output);
- `paired`: input and target in two folders, paired by their path below them and their stem (A and
  B may differ in extension): A/train/x.png + B/train/x.jpg (the reference's layout before
  combining), train_A/ + train_B/ (pix2pixHD, pix2pix-turbo), input/ + target/;
- `labels`: photos in images/ beside label maps in labels/, masks/ or annotations/, paired the same
  way (car-segmentation, ADE20K's images/training/ + annotations/training/).
Cityscapes and ADE20K-outdoor have finders of their own below.

The split of a pair is the nearest folder named train, val or test (or training, validation,
train_A ...); "" when there is none (tiles.assign_splits carves them). Hidden files and OS litter
are skipped; other files that are not images are listed, never silently dropped, and so are
images without a partner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pix2pix.data.images import image_files, is_image
from pix2pix.errors import Pix2PixError

IMAGE_DIRS = {"images", "image", "imgs", "img", "photos"}
LABEL_DIRS = {"masks", "mask", "labels", "label", "annotations"}
SIDES = {"a": "A", "input": "A", "inputs": "A", "b": "B", "target": "B", "targets": "B"}
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test"}
SPLIT_SIDE = re.compile(r"(train|training|val|validation|test)[_-]?(a|b)", re.IGNORECASE)  # train_A, testB
LOOKED_FOR = "A|B side-by-side images, A/ + B/ (or train_A/ + train_B/, input/ + target/) folders, images/ + labels/ folders"


@dataclass(frozen=True)
class Pair:
    split: str  # train | val | test | "" (the source defines no split)
    a: Path  # the tile's left half (for label layouts, the label map)
    b: Path  # the right half; for A|B images the same file as a


@dataclass
class Found:
    """What a folder holds: its layout, its pairs, and what could not be paired."""

    layout: str
    pairs: list[Pair]
    unpaired: list[Path] = field(default_factory=list)  # images without a partner
    ignored: list[Path] = field(default_factory=list)  # files that are not images
    doubles: list[Path] = field(default_factory=list)  # images whose key another image on their side has


def split_of(parts: tuple[str, ...]) -> str:
    """The nearest folder in `parts` that names a split (or a split's side, train_A), or ""."""
    for part in reversed(parts):
        if part.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[part.lower()]
        if match := SPLIT_SIDE.fullmatch(part):
            return SPLIT_NAMES[match.group(1).lower()]
    return ""


def side_folder(part: str) -> tuple[str, str] | None:
    """(side, the split named with it as written, or "") for a side folder: A/, input/ -> ("A", ""),
    train_B/ -> ("B", "train"), validationA/ -> ("A", "validation"); None for any other folder."""
    if part.lower() in SIDES:
        return SIDES[part.lower()], ""
    match = SPLIT_SIDE.fullmatch(part)
    return (match.group(2).upper(), match.group(1).lower()) if match else None


def side_of(part: str) -> str | None:
    """A, B or None for a folder name: A/, input/, train_A/ ... B/, target/, val_B/ ..."""
    side = side_folder(part)
    return side and side[0]


def find(root: str | Path, layout: str = "auto") -> Found:
    """The pairs under `root` in `layout` (ab, paired, labels), or in the one its folders show (auto)."""
    root = Path(root)
    if not root.is_dir():
        raise Pix2PixError(f"{root}: no such folder; set data.path to the folder of your pairs")
    if side_of(root.name) or root.name.lower() in IMAGE_DIRS | LABEL_DIRS:
        raise Pix2PixError(f"{root}: this is one side of a pair of folders; set data.path to the folder that holds "
                           f"{root.name}/ and its partner")
    files = image_files(root)
    if layout == "auto":
        layout = detect(root, files)
    found = {"ab": find_ab, "paired": find_paired, "labels": find_labels}[layout](root, files)
    if not found.pairs:
        raise Pix2PixError(f"{root}: no pairs found in layout {layout} (looked for {LOOKED_FOR}); "
                           + (f"{len(found.unpaired)} images have no partner, e.g. {found.unpaired[0].relative_to(root)}"
                              if found.unpaired else "put your pairs there"))
    return found


def detect(root: Path, files: list[Path]) -> str:
    folders = {part.lower() for f in files for part in f.relative_to(root).parts[:-1]}
    labels = bool(folders & IMAGE_DIRS) and bool(folders & LABEL_DIRS)
    paired = {side_of(f) for f in folders} >= {"A", "B"}
    if labels and paired:
        raise Pix2PixError(f"{root}: holds both images/ + labels/ and A/ + B/ folders; set data.layout to labels or paired")
    return "labels" if labels else "paired" if paired else "ab"


def _split_files(files: list[Path]) -> tuple[list[Path], list[Path]]:
    return [f for f in files if is_image(f)], [f for f in files if not is_image(f)]


def find_ab(root: Path, files: list[Path]) -> Found:
    images, ignored = _split_files(files)
    return Found("ab", [Pair(split_of(p.relative_to(root).parts[:-1]), p, p) for p in images], ignored=ignored)


class Side(dict):
    """A side's images by key; a second image with a key already taken (x.png beside x.jpg) is kept
    aside, never silently dropped."""

    def __init__(self):
        super().__init__()
        self.doubles: list[Path] = []

    def add(self, key: tuple, path: Path) -> None:
        if key in self:
            self.doubles.append(path)
        else:
            self[key] = path


def _match(root: Path, sides: dict[str, Side], layout: str, ignored: list[Path], outside: list[Path] = ()) -> Found:
    """Pairs of the files that share a key on both sides; the others unpaired."""
    a, b = sides["A"], sides["B"]
    pairs = sorted((Pair(split_of(b[k].relative_to(root).parts[:-1]), a[k], b[k]) for k in a.keys() & b.keys()),
                   key=lambda p: p.b)  # the order of the B files: tile names and carved splits follow it
    unpaired = sorted([a[k] for k in a.keys() - b.keys()] + [b[k] for k in b.keys() - a.keys()] + list(outside))
    return Found(layout, pairs, unpaired, ignored, sorted(a.doubles + b.doubles))


def _find(root: Path, files: list[Path], layout: str, locate) -> Found:
    """Each image on the side `locate(its path's parts)` names, keyed by the folders it gives and the
    stem; an image it places on neither side (None) is unpaired."""
    images, ignored = _split_files(files)
    sides = {"A": Side(), "B": Side()}
    outside = []
    for path in images:
        if place := locate(path.relative_to(root).parts):
            side, folders = place
            sides[side].add((*folders, path.stem), path)
        else:
            outside.append(path)
    return _match(root, sides, layout, ignored, outside)


def find_paired(root: Path, files: list[Path]) -> Found:
    """A and B files keyed by their path with the side folder taken out (the split it names kept),
    and their stem."""
    def locate(parts):
        for at, part in enumerate(parts[:-1]):  # the side folder nearest the root
            if side := side_folder(part):
                return side[0], (*parts[:at], side[1], *parts[at + 1:-1])
        return None
    return _find(root, files, "paired", locate)


def find_labels(root: Path, files: list[Path]) -> Found:
    """Label maps (A) in labels/ (masks/, annotations/) beside photos (B) in images/, keyed by the
    path below those folders and the stem: images/X.jpg ~ masks/X.png and images/training/X.jpg ~
    annotations/training/X.png (ADE20K)."""
    def locate(parts):
        for at in reversed(range(len(parts) - 1)):  # the images/ or labels/ folder nearest the file
            if parts[at].lower() in IMAGE_DIRS | LABEL_DIRS:
                return "B" if parts[at].lower() in IMAGE_DIRS else "A", (*parts[:at], *parts[at + 1:-1])
        return None
    return _find(root, files, "labels", locate)


def discover_cityscapes(root: str | Path) -> Found:
    """leftImg8bit/<split>/<city>/X_leftImg8bit.png (A) with gtFine/<split>/<city>/X_gtFine_color.png (B).

    The test split is skipped: its labels are withheld by the benchmark.
    """
    root = Path(root)
    pairs = []
    for photo in sorted(root.rglob("*_leftImg8bit.png")):
        rel = photo.relative_to(root).parts
        split = split_of(rel[:-1])
        if split == "test":
            continue
        top = rel.index("leftImg8bit")
        label = root.joinpath(*rel[:top], "gtFine", *rel[top + 1:-1], photo.name.replace("_leftImg8bit", "_gtFine_color"))
        if not label.exists():
            raise Pix2PixError(f"{photo}: no gtFine colour label {label.name}; extract gtFine_trainvaltest.zip beside it")
        pairs.append(Pair(split, photo, label))
    if not pairs:
        raise Pix2PixError(f"{root}: no leftImg8bit photos found; supply leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip")
    return Found("cityscapes", pairs)


# ADE20K scene categories (sceneCategories.txt) that are outdoor scenes.
ADE20K_OUTDOOR = frozenset("""
    alley amusement_park aqueduct arch badlands bamboo_forest beach bridge building_facade butte
    campsite canal canyon castle cemetery cliff coast construction_site corn_field corral cottage
    courtyard creek crosswalk dam desert desert_road downtown driveway farm field fire_escape
    forest_path forest_road formal_garden fountain gas_station golf_course harbor hayfield highway
    hill hot_spring house iceberg islet lake_natural lighthouse mansion marsh mountain
    mountain_snowy ocean orchard park parking_lot pasture patio pier plaza playground pond
    promenade racecourse railroad_track rainforest residential_neighborhood rice_paddy river rock_arch
    rope_bridge ruin sand sandbar sea_cliff skyscraper snowfield stadium street swamp temple
    tower valley vegetable_garden viaduct village vineyard volcano waterfall water_tower wheat_field
    wind_farm yard
""".split())


def discover_ade20k_outdoor(root: str | Path) -> Found:
    """ADEChallengeData2016 annotation/image pairs whose scene (sceneCategories.txt) is outdoor."""
    root = Path(root)
    scene_files = sorted(root.rglob("sceneCategories.txt"))
    if not scene_files:
        raise Pix2PixError(f"{root}: sceneCategories.txt not found; is this ADEChallengeData2016?")
    scenes = dict(line.split(maxsplit=1) for line in scene_files[0].read_text().splitlines() if line.strip())
    found = find(root, "labels")
    found.pairs = [p for p in found.pairs if scenes.get(p.b.stem, "").strip() in ADE20K_OUTDOOR]
    if not found.pairs:
        raise Pix2PixError(f"{scene_files[0]}: no outdoor scenes listed; the dataset holds nothing to train on")
    return found
