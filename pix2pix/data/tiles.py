"""Build aligned A|B tiles, split them, and record them in manifest.csv and info.json.

A tile is one PNG of size (side, 2 * side): A on the left, B on the right; `direction` picks which
half is the model's input. Val and test tiles are image_size; train tiles are the paper's load size
(image_size x augment.load_scale, 286 for 256), which the jitter random-crops back to image_size:
a source is resized once, as the reference does (source -> 286), not twice. Each half is framed by
data.fit (framing.py); a half that holds a label map is resized nearest and, when it holds class
ids, coloured by the palette.

Bad pairs do not stop the pass at the first one: every problem is collected and reported in one
message, and nothing is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from pix2pix.data.framing import fit
from pix2pix.data.images import read_label, read_rgb
from pix2pix.data.pairs import SPLITS, Found, Pair, discover_ade20k_outdoor, discover_cityscapes, find
from pix2pix.data.palettes import Palette, load_palette, PALETTES
from pix2pix.data.sources import DATASETS
from pix2pix.errors import Pix2PixError
from pix2pix.files import atomic_dir, write_json

log = logging.getLogger(__name__)
ASPECT_TOLERANCE = 0.02  # A and B of a pair may differ in size, by this much at most in aspect ratio
SHOWN = 3  # problems of a kind named in the message; the rest are counted


def shown(items, limit: int = SHOWN, sep: str = ", ") -> str:
    """The first `limit` items joined by `sep`, then `sep` + "..." when there are more."""
    return sep.join(map(str, items[:limit])) + (f"{sep}..." if len(items) > limit else "")


@dataclass(frozen=True)
class Recipe:
    """How a dataset's pairs become tiles: which half holds a label map, its palette, the framing."""

    label_half: str | None  # "A", "B" or None: the half resized nearest (and coloured, if class ids)
    palette: Palette | None  # colours of class-id label maps
    fit: str  # data.fit

    def info(self, coloured_ids: bool) -> dict:
        """What inference needs to feed a model the way its tiles were made (generator_file.py); the
        palette only if it coloured class ids (a folder of colour maps has none to pass on)."""
        return {"label_half": self.label_half, "palette": self.palette.to_dict() if self.palette and coloured_ids else None,
                "fit": self.fit}


# layout (sources.py) -> the pairs in a dataset's folder
FINDERS = {
    "labels": lambda root, cfg: find(root, "labels"),
    "ade20k": lambda root, cfg: discover_ade20k_outdoor(root),
    "cityscapes": lambda root, cfg: discover_cityscapes(root),
    "ab": lambda root, cfg: find(root, "ab"),
    "folder": lambda root, cfg: find(root, cfg.data.layout),
}
LABEL_HALF = {"labels": "A", "cityscapes": "B"}  # found layout -> the half holding the label map


def read_source(raw_dir: str | Path, cfg) -> tuple[Found, Recipe]:
    """The pairs of cfg.dataset in raw_dir (data.path) and how to tile them."""
    raw_dir = Path(raw_dir)
    source = DATASETS[cfg.dataset]
    origin = downloaded_dataset(raw_dir)
    if source.name != "folder" and origin != source.name:
        raise Pix2PixError(f"{raw_dir}: not the download of '{source.name}' (its SOURCE.json names {origin!r}); with a "
                           "built-in dataset data.path stays data/raw, the download stage's output (your own pairs: "
                           "dataset: folder)")
    if source.name == "folder" and origin:
        raise Pix2PixError(f"{raw_dir}: the download stage's output, not a folder of your pairs; set data.path to "
                           "your folder (for example data/own)")
    found = FINDERS[source.layout](raw_dir, cfg)
    half = LABEL_HALF.get(found.layout)
    palette = None
    if half:
        palette = load_palette(cfg.data.palette, raw_dir) if source.name == "folder" else PALETTES.get(source.palette)
    ours = {raw_dir / "SOURCE.json", raw_dir / cfg.data.palette}  # files of the dataset's own that are not pairs
    found.ignored = [p for p in found.ignored if p not in ours]
    return found, Recipe(half, palette, cfg.data.fit)


def downloaded_dataset(raw_dir: Path) -> str | None:
    """The dataset the download stage wrote into raw_dir (its SOURCE.json), or None."""
    try:
        return json.loads((raw_dir / "SOURCE.json").read_text())["dataset"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _half(path: Path, is_label: bool, palette: Palette | None) -> tuple[np.ndarray, bool]:
    """A tile half's pixels, and whether they were class ids the palette coloured."""
    if not is_label:
        return read_rgb(path), False
    label = read_label(path, len(palette.colours) if palette else None)
    if label.ndim == 3:  # already in colour
        return label, False
    if palette is None:
        raise Pix2PixError(f"{path}: a label map in class ids, but this layout has no palette for them")
    return palette.colour(label, str(path)), True


def make_tile(pair: Pair, size: int, recipe: Recipe) -> tuple[np.ndarray, bool]:
    """The (size, 2 * size, 3) uint8 A|B tile of one pair, and whether it coloured class ids."""
    ids = False
    if pair.a == pair.b:  # one side-by-side A|B image
        image = read_rgb(pair.a)
        half = image.shape[1] // 2
        if half == 0:
            raise Pix2PixError(f"{pair.a}: too narrow to hold A|B halves")
        a, b = image[:, :half], image[:, half:2 * half]
    else:
        (a, ids_a), (b, ids_b) = (_half(p, recipe.label_half == side, recipe.palette)
                                  for p, side in ((pair.a, "A"), (pair.b, "B")))
        check_aspect(pair, a.shape[1::-1], b.shape[1::-1])
        ids = ids_a or ids_b
    halves = [fit(Image.fromarray(x), size, recipe.fit, Image.NEAREST if recipe.label_half == side else Image.BICUBIC)
              for x, side in ((a, "A"), (b, "B"))]
    return np.concatenate([np.asarray(h) for h in halves], axis=1), ids


def check_aspect(pair: Pair, a_size: tuple[int, int], b_size: tuple[int, int]) -> None:
    """A and B may differ in size (each is framed alone), not in the shape of what they show."""
    ra, rb = a_size[0] / a_size[1], b_size[0] / b_size[1]
    if abs(ra / rb - 1) > ASPECT_TOLERANCE:
        raise Pix2PixError(f"{pair.a} is {a_size[0]}x{a_size[1]} but {pair.b.name} is {b_size[0]}x{b_size[1]}: "
                           f"aspect ratios {ra:.2f} and {rb:.2f} differ; A and B of a pair must show the same view")


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


def problems(root: Path, found: Found, failures: list[str], pairs: list[Pair]) -> str | None:
    """One line for everything wrong with a folder's pairs (assigned to their splits), or None."""
    parts = []
    if found.doubles:
        parts.append(f"{len(found.doubles)} images share a name with another on their side "
                     f"({shown([p.relative_to(root) for p in found.doubles])}): keep one of each")
    missing = [s for s in SPLITS if not any(p.split == s for p in pairs)]
    if missing:
        parts.append(f"no {' or '.join(missing)} pairs: give {'them folders' if len(missing) > 1 else 'it a folder'} "
                     "or more pairs, or raise data.val_fraction")
    if found.unpaired:
        count = f"{len(found.unpaired)} image has" if len(found.unpaired) == 1 else f"{len(found.unpaired)} images have"
        parts.append(f"{count} no partner ({shown([p.relative_to(root) for p in found.unpaired])})")
    if failures:
        parts.append(f"{len(failures)} of {len(pairs)} pairs cannot be used: {shown(failures, sep='; ')}")
    return f"{root}: " + "; ".join(parts) + "; mend these and run again" if parts else None


def tiles_of(pairs: list[Pair], recipe: Recipe, cfg, desc: str = "tiles"):
    """(pair, tile, whether it coloured ids) for each pair, or (pair, the reason it cannot be tiled, False)."""
    for pair in tqdm(pairs, desc=desc, unit="pair"):
        try:
            yield pair, *make_tile(pair, cfg.tile_size(pair.split), recipe)
        except Pix2PixError as err:
            yield pair, str(err), False


def build_tiles(raw_dir: str | Path, out_dir: str | Path, cfg) -> pd.DataFrame:
    """raw pairs (data.path) -> out_dir/{train,val,test}/NNNNN.png, manifest.csv and info.json."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    found, recipe = read_source(raw_dir, cfg)
    if found.ignored:
        log.warning("%s: skipping %d files that are not images (%s)", raw_dir, len(found.ignored),
                    ", ".join(str(p.relative_to(raw_dir)) for p in found.ignored[:SHOWN]))
    pairs = assign_splits(found.pairs, cfg.data.val_fraction, cfg.seed)
    rows, failures, coloured_ids = [], [], False
    with atomic_dir(out_dir) as tmp:
        for index, (pair, tile, ids) in enumerate(tiles_of(pairs, recipe, cfg)):
            if isinstance(tile, str):
                failures.append(tile)
                continue
            coloured_ids |= ids
            name = f"{pair.split}/{index:05d}.png"
            (tmp / pair.split).mkdir(exist_ok=True)
            Image.fromarray(tile).save(tmp / name)
            rows.append({"tile": name, "split": pair.split,
                         "source_a": str(pair.a.relative_to(raw_dir)), "source_b": str(pair.b.relative_to(raw_dir))})
        if message := problems(raw_dir, found, failures, pairs):
            raise Pix2PixError(message)
        manifest = pd.DataFrame(rows)
        manifest.to_csv(tmp / "manifest.csv", index=False)
        write_json(tmp / "info.json", {"dataset": cfg.dataset, "layout": found.layout, **recipe.info(coloured_ids),
                                       "pairs": dict(sorted(Counter(manifest["split"]).items()))})
    return manifest


def read_manifest(tiles_dir: str | Path) -> pd.DataFrame:
    path = Path(tiles_dir) / "manifest.csv"
    if not path.exists():
        raise Pix2PixError(f"{path}: missing; run the prepare stage first (dvc repro prepare)")
    return pd.read_csv(path)


def read_info(tiles_dir: str | Path) -> dict:
    """info.json: how the tiles were made (layout, label half, palette, framing)."""
    path = Path(tiles_dir) / "info.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise Pix2PixError(f"{path}: missing; the tiles predate this version, re-run prepare (dvc repro prepare)") from None
