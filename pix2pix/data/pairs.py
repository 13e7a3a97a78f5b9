"""Find (image, mask) pairs in a dataset tree and read them safely.

Layouts: any folder named like images/ with a sibling masks/, labels/ or annotations/ folder; files
pair by stem (any image extension). The split is the nearest ancestor folder named train, val or
test (or training, validation). Cityscapes and ADE20K have finders of their own below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pix2pix.errors import Pix2PixError

IMAGE_DIRS = {"images", "image", "imgs", "img", "photos"}
MASK_DIRS = {"masks", "mask", "labels", "label", "annotations"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class Pair:
    split: str  # train | val | test | "" (the source defines no split)
    image: Path  # the photo (or, for A|B datasets, the side-by-side image)
    mask: Path  # the class-id mask (for A|B datasets, the same file as image)


def discover_mask_pairs(root: str | Path) -> list[Pair]:
    """Every image/mask pair under `root`, sorted; raises if an image has no mask or none exist.

    Files pair by their path below the two folders, so both images/X.jpg ~ masks/X.png and
    images/training/X.jpg ~ annotations/training/X.png (ADE20K) work.
    """
    root = Path(root)
    pairs = []
    for image_dir in sorted(p for p in root.rglob("*") if p.is_dir() and p.name.lower() in IMAGE_DIRS):
        mask_dirs = [d for d in image_dir.parent.iterdir() if d.is_dir() and d.name.lower() in MASK_DIRS]
        if not mask_dirs:
            continue
        masks = {p.relative_to(d).with_suffix(""): p for d in mask_dirs for p in d.rglob("*")
                 if p.suffix.lower() in IMAGE_EXTS}
        for image in sorted(p for p in image_dir.rglob("*") if p.is_file()):
            if image.suffix.lower() not in IMAGE_EXTS:
                raise Pix2PixError(f"{image}: not an image file ({', '.join(sorted(IMAGE_EXTS))}); remove it")
            key = image.relative_to(image_dir).with_suffix("")
            if key not in masks:
                raise Pix2PixError(f"{image}: no mask with the same name in {mask_dirs[0]}; add it or remove the image")
            pairs.append(Pair(split_of(image.relative_to(root).parts[:-1]), image, masks[key]))
    if not pairs:
        raise Pix2PixError(f"{root}: no image/mask pairs found (expected images/ beside masks/ or labels/)")
    return pairs


def split_of(parts: tuple[str, ...]) -> str:
    """The nearest folder in `parts` that names a split, or "" if none does."""
    return next((SPLIT_NAMES[p] for p in reversed(parts) if p in SPLIT_NAMES), "")


def discover_cityscapes(root: str | Path) -> list[Pair]:
    """leftImg8bit/<split>/<city>/X_leftImg8bit.png with gtFine/<split>/<city>/X_gtFine_color.png.

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
    return pairs


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


def discover_ade20k_outdoor(root: str | Path) -> list[Pair]:
    """ADEChallengeData2016 image/annotation pairs whose scene (sceneCategories.txt) is outdoor."""
    root = Path(root)
    scene_files = sorted(root.rglob("sceneCategories.txt"))
    if not scene_files:
        raise Pix2PixError(f"{root}: sceneCategories.txt not found; is this ADEChallengeData2016?")
    scenes = dict(line.split(maxsplit=1) for line in scene_files[0].read_text().splitlines() if line.strip())
    pairs = [p for p in discover_mask_pairs(root) if scenes.get(p.image.stem, "").strip() in ADE20K_OUTDOOR]
    if not pairs:
        raise Pix2PixError(f"{scene_files[0]}: no outdoor scenes listed; the dataset holds nothing to train on")
    return pairs


def discover_ab_images(root: str | Path) -> list[Pair]:
    """A|B side-by-side images (the pix2pix archives): every image file, split by folder name."""
    root = Path(root)
    pairs = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS):
        split = split_of(path.relative_to(root).parts[:-1])
        pairs.append(Pair(split, path, path))
    if not pairs:
        raise Pix2PixError(f"{root}: no images found; the download is empty or not an A|B dataset")
    return pairs


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8; any unreadable or truncated file raises Pix2PixError naming it."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise Pix2PixError(f"{path}: unreadable image ({err}); replace or remove the file") from None


def read_class_ids(path: str | Path) -> np.ndarray:
    """(H, W) uint8 class ids from a mask: channel 0 of RGB(A) (R=G=B=id), or the grey/palette index."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img if img.mode in ("L", "P") else img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise Pix2PixError(f"{path}: unreadable mask ({err}); replace or remove the file") from None
    return array if array.ndim == 2 else array[..., 0]
