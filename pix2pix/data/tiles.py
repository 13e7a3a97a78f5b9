"""Build aligned A|B tiles, split them, and record everything in manifest.csv.

A tile is one PNG of size (side, 2 * side): A on the left, B on the right. Val and test tiles are
image_size; train tiles are the paper's load size (image_size x augment.load_scale, 286 for 256),
which the jitter random-crops back to image_size: a source is resized once, as the reference does
(source -> 286), not twice (source -> 256 -> 286, 4.2 grey levels apart on car photos). For mask
datasets A is the colour mask and B the photo, so `direction: AtoB` means mask -> photo; A|B
datasets (the pix2pix archives) keep their own halves.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from pix2pix.data.masks import PALETTES, colorize
from pix2pix.data.pairs import (SPLITS, Pair, discover_ab_images, discover_ade20k_outdoor, discover_cityscapes,
                                discover_mask_pairs, read_class_ids, read_rgb)
from pix2pix.data.sources import DATASETS
from pix2pix.errors import Pix2PixError
from pix2pix.files import atomic_dir


def fit(image: Image.Image, size: int, mode: str, resample) -> Image.Image:
    """Square `size` image: crop = resize shorter side + centre crop; pad = pad to square + resize."""
    w, h = image.size
    if mode == "pad":
        side = max(w, h)
        canvas = Image.new(image.mode, (side, side))
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        return canvas.resize((size, size), resample)
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))


def _same_size(pair: Pair, photo: np.ndarray, mask: np.ndarray) -> None:
    if mask.shape[:2] != photo.shape[:2]:
        raise Pix2PixError(
            f"{pair.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but {pair.image.name} is "
            f"{photo.shape[1]}x{photo.shape[0]}; image and mask must be the same size"
        )


def _side_by_side(a: np.ndarray, a_resample, b: np.ndarray, b_resample, size: int, mode: str) -> np.ndarray:
    halves = [fit(Image.fromarray(x), size, mode, r) for x, r in ((a, a_resample), (b, b_resample))]
    return np.concatenate([np.asarray(h) for h in halves], axis=1)


def mask_pair_tile(pair: Pair, size: int, mode: str, palette: np.ndarray = PALETTES["cars"]) -> np.ndarray:
    """Colour mask | photo, both fitted the same way; masks resized nearest (no blended colours)."""
    photo, ids = read_rgb(pair.image), read_class_ids(pair.mask)
    _same_size(pair, photo, ids)
    return _side_by_side(colorize(ids, str(pair.mask), palette), Image.NEAREST, photo, Image.BICUBIC, size, mode)


def photo_label_tile(pair: Pair, size: int, mode: str) -> np.ndarray:
    """Photo | colour label map (cityscapes gtFine colours), the label resized nearest."""
    photo, label = read_rgb(pair.image), read_rgb(pair.mask)
    _same_size(pair, photo, label)
    return _side_by_side(photo, Image.BICUBIC, label, Image.NEAREST, size, mode)


def ab_tile(pair: Pair, size: int, mode: str) -> np.ndarray:
    """A side-by-side A|B image -> both halves fitted to `size`, side by side again."""
    image = read_rgb(pair.image)
    half = image.shape[1] // 2
    if half == 0:
        raise Pix2PixError(f"{pair.image}: too narrow to hold A|B halves")
    return _side_by_side(image[:, :half], Image.BICUBIC, image[:, half:2 * half], Image.BICUBIC, size, mode)


# layout (sources.py) -> (find the pairs, make one tile)
LAYOUTS = {
    "masks": (discover_mask_pairs, mask_pair_tile),
    "ade20k": (discover_ade20k_outdoor, functools.partial(mask_pair_tile, palette=PALETTES["ade20k"])),
    "cityscapes": (discover_cityscapes, photo_label_tile),
    "ab": (discover_ab_images, ab_tile),
}


def tile_size(cfg, split: str) -> int:
    """Side of a split's tiles: the load size for train, image_size for val and test."""
    return round(cfg.image_size * cfg.augment.load_scale) if split == "train" else cfg.image_size


def assign_splits(pairs: list[Pair], val_fraction: float, seed: int) -> list[Pair]:
    """The source's splits as the reference tests on them: a source with a val split but no test
    split (maps, edges2shoes, night2day, cityscapes, ADE20K) tests on its val split, as pix2pix and
    MMagic report those datasets. A missing val (and test, if the source has neither) is carved from
    train by a seeded shuffle."""
    pairs = [p if p.split else dataclasses.replace(p, split="train") for p in pairs]
    if not any(p.split == "test" for p in pairs):
        pairs = [dataclasses.replace(p, split="test") if p.split == "val" else p for p in pairs]
    for split in ("val", "test"):
        if any(p.split == split for p in pairs) or val_fraction == 0:
            continue
        train = [i for i, p in enumerate(pairs) if p.split == "train"]
        count = max(1, round(len(train) * val_fraction)) if len(train) > 2 else 0
        rng = np.random.default_rng([seed, SPLITS.index(split)])
        for i in rng.permutation(train)[:count]:
            pairs[i] = dataclasses.replace(pairs[i], split=split)
    return pairs


def build_tiles(raw_dir: str | Path, out_dir: str | Path, cfg) -> pd.DataFrame:
    """raw dataset -> out_dir/{train,val,test}/NNNNN.png + out_dir/manifest.csv."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    discover, make_tile = LAYOUTS[DATASETS[cfg.dataset].layout]
    pairs = assign_splits(discover(raw_dir), cfg.data.val_fraction, cfg.seed)
    rows = []
    with atomic_dir(out_dir) as tmp:
        for index, pair in enumerate(tqdm(pairs, desc="tiles", unit="pair")):
            tile = make_tile(pair, tile_size(cfg, pair.split), cfg.data.fit)
            name = f"{pair.split}/{index:05d}.png"
            (tmp / pair.split).mkdir(exist_ok=True)
            Image.fromarray(tile).save(tmp / name)
            rows.append({"tile": name, "split": pair.split,
                         "source_a": str(pair.mask.relative_to(raw_dir)),
                         "source_b": str(pair.image.relative_to(raw_dir))})
        manifest = pd.DataFrame(rows)
        manifest.to_csv(tmp / "manifest.csv", index=False)
    return manifest


def read_manifest(tiles_dir: str | Path) -> pd.DataFrame:
    path = Path(tiles_dir) / "manifest.csv"
    if not path.exists():
        raise Pix2PixError(f"{path}: missing; run the prepare stage first (dvc repro prepare)")
    return pd.read_csv(path)
