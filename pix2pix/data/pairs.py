"""Find (image, mask) pairs in a dataset tree and read them safely.

Layouts: any folder named like images/ with a sibling masks/ or labels/ folder; files pair by stem
(any image extension). The split is the nearest ancestor folder named train, val or test.
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


@dataclass(frozen=True)
class Pair:
    split: str  # train | val | test | "" (the source defines no split)
    image: Path  # the photo (or, for A|B datasets, the side-by-side image)
    mask: Path  # the class-id mask (for A|B datasets, the same file as image)


def discover_mask_pairs(root: str | Path) -> list[Pair]:
    """Every image/mask pair under `root`, sorted; raises if an image has no mask or none exist."""
    root = Path(root)
    pairs = []
    for image_dir in sorted(p for p in root.rglob("*") if p.is_dir() and p.name.lower() in IMAGE_DIRS):
        mask_dirs = [d for d in image_dir.parent.iterdir() if d.is_dir() and d.name.lower() in MASK_DIRS]
        if not mask_dirs:
            continue
        masks = {p.stem: p for d in mask_dirs for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS}
        split = next((part for part in reversed(image_dir.relative_to(root).parts) if part in SPLITS), "")
        for image in sorted(p for p in image_dir.iterdir() if p.is_file()):
            if image.suffix.lower() not in IMAGE_EXTS:
                raise Pix2PixError(f"{image}: not an image file ({', '.join(sorted(IMAGE_EXTS))}); remove it")
            if image.stem not in masks:
                raise Pix2PixError(f"{image}: no mask with the same name in {mask_dirs[0]}; add it or remove the image")
            pairs.append(Pair(split, image, masks[image.stem]))
    if not pairs:
        raise Pix2PixError(f"{root}: no image/mask pairs found (expected images/ beside masks/ or labels/)")
    return pairs


def discover_ab_images(root: str | Path) -> list[Pair]:
    """A|B side-by-side images (the pix2pix archives): every image file, split by folder name."""
    root = Path(root)
    pairs = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS):
        split = next((part for part in reversed(path.relative_to(root).parts[:-1]) if part in SPLITS), "")
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
